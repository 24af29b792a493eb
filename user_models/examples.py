"""The builder contract with each of Keras's three model APIs (Sequential, Functional, subclassing).

Use one with ``model=custom model.builder=user_models.examples:<function>``; ``model.params`` are
its keyword arguments (e.g. ``model.params.width=128``). Each builder gets the raw example shape
and the number of classes (0 for a regression target) and returns an *uncompiled* model whose
output fits the task: ``num_classes`` softmax units, one sigmoid unit for 2 classes, one linear
unit for regression. The pipeline compiles, trains, checkpoints and exports it.
"""

from __future__ import annotations

import tensorflow as tf


def task_output(num_classes: int, name: str = "probabilities") -> tf.keras.layers.Layer:
    """The last layer every builder ends with: softmax, one sigmoid unit, or one linear unit."""
    if num_classes == 0:
        return tf.keras.layers.Dense(1, name="target")
    if num_classes == 2:
        return tf.keras.layers.Dense(1, activation="sigmoid", name=name)
    return tf.keras.layers.Dense(num_classes, activation="softmax", name=name)


def sequential_mlp(input_shape, num_classes, width: int = 64, depth: int = 2, dropout: float = 0.0):
    """Sequential API: the seeds' multilayer perceptron."""
    layers = [tf.keras.Input(tuple(input_shape)), tf.keras.layers.Flatten()]
    for _ in range(depth):
        layers += [
            tf.keras.layers.Dense(width, activation="relu"),
            tf.keras.layers.Dropout(dropout),
        ]
    return tf.keras.Sequential([*layers, task_output(num_classes)], name="sequential_mlp")


def functional_mlp(input_shape, num_classes, width: int = 64):
    """Functional API: two dense blocks with a skip connection."""
    inputs = tf.keras.Input(tuple(input_shape))
    x = tf.keras.layers.Dense(width, activation="relu")(tf.keras.layers.Flatten()(inputs))
    y = tf.keras.layers.Dense(width, activation="relu")(x)
    x = tf.keras.layers.Add()([x, y])
    return tf.keras.Model(inputs, task_output(num_classes)(x), name="functional_mlp")


@tf.keras.utils.register_keras_serializable(package="user_models")
class ScaledResidual(tf.keras.layers.Layer):
    """A custom layer: ``x + scale * relu(dense(x))`` with a learned scale."""

    def __init__(self, width: int, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.dense = tf.keras.layers.Dense(width, activation="relu")

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(), initializer="ones")
        super().build(input_shape)

    def call(self, inputs):
        return inputs + self.scale * self.dense(inputs)

    def get_config(self):
        return {**super().get_config(), "width": self.width}


@tf.keras.utils.register_keras_serializable(package="user_models")
class ResidualClassifier(tf.keras.Model):
    """Model subclassing, with the custom layer above; ``get_config`` lets Keras save and reload it."""

    def __init__(self, num_classes: int, width: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.width = num_classes, width
        self.flatten = tf.keras.layers.Flatten()
        self.project = tf.keras.layers.Dense(width, activation="relu")
        self.residual = ScaledResidual(width)
        self.head = task_output(num_classes)

    def call(self, inputs, training=False):
        return self.head(self.residual(self.project(self.flatten(inputs))))

    def get_config(self):
        return {"num_classes": self.num_classes, "width": self.width, "name": self.name}


def subclassed_mlp(input_shape, num_classes, width: int = 64):
    """Subclassing API: :class:`ResidualClassifier`."""
    return ResidualClassifier(num_classes, width, name="subclassed_mlp")
