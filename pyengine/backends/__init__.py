"""One module per framework behind the Model interface; each imports its framework lazily."""
