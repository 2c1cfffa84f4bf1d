"""Data loading: TFDS builders, the synthetic-person dataset and the per-host tf.data pipeline."""
