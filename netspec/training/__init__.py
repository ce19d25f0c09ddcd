"""Training: data, optimizers and the training loop behind `netspec train`."""
