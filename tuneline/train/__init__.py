"""LoRA / QLoRA training: the recipe, its batches, its budget, its checkpoint choice, its processes."""
