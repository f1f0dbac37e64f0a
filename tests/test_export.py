import torch

from tuneline.models.export import export_merged


def test_merged_model_logits_match_base_plus_adapter(tiny_model_dir, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneline.models.modeling import load_model

    torch.manual_seed(0)
    peft_model = get_peft_model(
        load_model(tiny_model_dir), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    )
    with torch.no_grad():  # a fresh adapter is a no-op (B = 0); give it real weights so merging matters
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)
    from tuneline.models.modeling import load_tokenizer

    load_tokenizer(tiny_model_dir).save_pretrained(adapter_dir)

    out = export_merged(tiny_model_dir, adapter_dir, tmp_path / "merged")
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert not (out / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    reference = PeftModel.from_pretrained(load_model(tiny_model_dir), adapter_dir).eval()
    base = load_model(tiny_model_dir).eval()
    ids = torch.randint(3, merged.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, want, plain = merged(ids).logits, reference(ids).logits, base(ids).logits
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(got, plain, atol=1e-2)  # the adapter changed the model, so the check is not vacuous
