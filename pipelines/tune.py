"""`run.py tune`'s pipeline: the finetune pipeline's data steps (and cache entries), then the recipe search. The
winner is trained, evaluated and promoted by the finetune pipeline, run on the config the search writes
(runner/tune.py), so a rerun of that config is the same training."""

from zenml import pipeline

from pipelines.finetune import data_steps
from steps.tune import search_recipe
from tuneline.config import TunelineConfig


@pipeline(name="tune")
def tune(config: TunelineConfig) -> None:
    dataset = data_steps(config.data, config.model)
    search_recipe(dataset, config, after="check_data")
