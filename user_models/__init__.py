"""Your own Keras models, resolved by ``model.builder: "user_models.<module>:<function>"`` (``model=custom``).

Every module here is a DVC dependency of train, evaluate and export, so editing one reruns them.
:mod:`user_models.examples` shows the contract with each of Keras's three APIs.
"""
