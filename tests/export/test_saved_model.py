"""The SavedModel export keeps the model's variables, not the Keras model (whose layers' traced
functions made it slow to save and load), and still saves a model that owns another resource."""

from __future__ import annotations

import numpy as np

from pipeline.export.saved_model import saved_model_predictor, write_saved_model

META = {
    "input_shape": [4],
    "class_names": ["a", "b", "c"],
    "normalization": {"method": "minmax", "offset": [0.0] * 4, "scale": [2.0] * 4},
}


def _model(*hidden):
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((4,))
    x = inputs
    for layer in hidden:
        x = layer(x)
    x = tf.keras.layers.BatchNormalization()(tf.keras.layers.Dense(8, activation="relu")(x))
    return tf.keras.Model(inputs, tf.keras.layers.Dense(3, activation="softmax")(x))


def test_the_saved_model_holds_the_variables_not_the_keras_layers(tmp_path):
    import tensorflow as tf

    model = _model()
    signatures = write_saved_model(model, META, 1.0, tmp_path / "saved_model")
    assert {"serving_default", "probabilities"} <= set(signatures)
    loaded = tf.saved_model.load(str(tmp_path / "saved_model"))
    assert not hasattr(loaded, "model") and len(loaded.model_variables) == len(model.variables)
    raw = np.random.default_rng(0).uniform(0, 2, size=(5, 4)).astype(np.float32)
    np.testing.assert_allclose(
        saved_model_predictor(tmp_path / "saved_model")(raw),
        model.predict(raw / 2.0, verbose=0),
        atol=1e-6,
    )


def test_a_model_with_a_lookup_table_is_saved_whole(tmp_path):
    """A resource that is not a variable (a user layer's hash table) is not covered by the
    variables: the whole Keras model is tracked instead, and the export still serves."""
    import tensorflow as tf

    class Lookup(tf.keras.layers.Layer):
        def build(self, shape):
            keys, values = tf.constant([0, 1], tf.int64), tf.constant([1.0, 3.0])
            self.table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(keys, values), 0.0
            )

        def call(self, x):
            return x * self.table.lookup(tf.constant(1, tf.int64))

    model = _model(Lookup())
    write_saved_model(model, META, 1.0, tmp_path / "saved_model")
    assert hasattr(tf.saved_model.load(str(tmp_path / "saved_model")), "model")
    raw = np.random.default_rng(1).uniform(0, 2, size=(5, 4)).astype(np.float32)
    np.testing.assert_allclose(
        saved_model_predictor(tmp_path / "saved_model")(raw),
        model.predict(raw / 2.0, verbose=0),
        atol=1e-6,
    )
