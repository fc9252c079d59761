"""Training glue around transformers' Trainer: data loading, collation, the trainer subclass and the CLIs."""
