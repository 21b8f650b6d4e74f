"""The tf.Transform `preprocessing_fn`: shared vocabularies, ids, z-scored numbers.

Features that name the same vocabulary are counted together (one vocabulary file, named after
the vocabulary) and mapped through it, so they index one embedding table. Ids keep their
sequence structure: a sequence stays a SparseTensor of int64 ids, never padded with 0 (id 0
is the most frequent value).
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft

from pipeline.config import Config


def _as_ragged(tensor) -> tf.RaggedTensor:
    """[batch] or sparse [batch, None] values -> ragged [batch, None]."""
    if isinstance(tensor, tf.SparseTensor):
        return tf.RaggedTensor.from_sparse(tensor)
    return tf.RaggedTensor.from_tensor(tf.expand_dims(tensor, 1))


class PreprocessingFn:
    """A picklable `preprocessing_fn` for one config.

    Args:
      config: the validated feature config.
    """

    def __init__(self, config: Config):
        self._config = config

    def __call__(self, inputs: dict) -> dict:
        config = self._config
        outputs = {}
        for vocabulary, names in config.vocabularies().items():
            settings = config.vocabulary_config(vocabulary)
            tokens = tf.concat([_as_ragged(inputs[name]) for name in names], axis=1)
            path = tft.vocabulary(
                tokens,
                top_k=settings.top_k,
                frequency_threshold=settings.frequency_threshold
                if settings.frequency_threshold > 1
                else None,
                vocab_filename=vocabulary,
                name=f"vocabulary_{vocabulary}",
            )
            for name in names:
                outputs[name] = tft.apply_vocabulary(
                    inputs[name], path, num_oov_buckets=settings.num_oov_buckets
                )
        for feature in config.features:
            if feature.type == "numeric":
                outputs[feature.name] = tft.scale_to_z_score(inputs[feature.name])
        outputs[config.label.name] = tf.cast(inputs[config.label.name], tf.float32)
        return outputs
