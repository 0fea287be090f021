"""A trained model: the recipe (Config), typed records, the model card, arrays and their checks."""
