from typing import Annotated

from zenml import step

from tuneline.artifacts import ChatDataset
from tuneline.chat_format import prepare_splits
from tuneline.config import DataConfig, ModelConfig
from tuneline.modeling import load_tokenizer, resolve_base_model
from tuneline.sources import load_splits


@step
def load_data(data: DataConfig) -> Annotated[ChatDataset, "raw_data"]:
    return ChatDataset(splits=load_splits(data))


@step
def prepare_dataset(raw: ChatDataset, data: DataConfig, model: ModelConfig) -> Annotated[ChatDataset, "chat_dataset"]:
    tokenizer = load_tokenizer(resolve_base_model(model.base))
    return ChatDataset(splits=prepare_splits(raw.splits, data, tokenizer))
