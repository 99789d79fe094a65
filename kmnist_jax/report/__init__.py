"""Pictures of the data, the training and the predictions."""
