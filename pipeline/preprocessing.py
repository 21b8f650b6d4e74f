"""The tf.Transform `preprocessing_fn`: shared vocabularies, ids, z-scored numbers.

Features (categorical, sequence or bag) that name the same vocabulary are counted together
(one vocabulary file, named after the vocabulary) and mapped through it, so they index one
embedding table. Ids keep their list structure: a sequence or a bag stays a SparseTensor of
int64 ids, never padded with 0 (id 0 is the most frequent value).
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft

from common.config import Config


def _values(tensor) -> tf.Tensor:
    """Every value of a [batch] or sparse [batch, None] tensor, flat."""
    if isinstance(tensor, tf.SparseTensor):
        return tensor.values
    return tensor


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
            tokens = tf.concat([_values(inputs[name]) for name in names], axis=0)
            # Unit weights give the same counts, ordering and thresholds, but make
            # tf.Transform count each batch's distinct tokens in the graph and hand Beam one
            # (token, count) per distinct token and batch; without weights it hands Beam
            # every token occurrence as its own element, by far the pipeline's largest cost.
            path = tft.vocabulary(
                tokens,
                weights=tf.ones(tf.shape(tokens), tf.float32),
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
                # Mean and variance in float64: summed over batches in whatever order the
                # runner gives them, float32 sums differ in the last bits from run to run.
                scaled = tft.scale_to_z_score(tf.cast(inputs[feature.name], tf.float64))
                outputs[feature.name] = tf.cast(scaled, tf.float32)
        outputs[config.label.name] = tf.cast(inputs[config.label.name], tf.float32)
        return outputs
