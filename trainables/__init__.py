"""What runs on a worker: datasets, models, the training loop, KD, teachers, scores and students."""
