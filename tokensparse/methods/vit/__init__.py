"""The dense ViT / DeiT backbone as a method (`model.name='vit'`): the baseline every other
method is compared to."""
from tokensparse.methods.base import Method


class DenseMethod(Method):
  name = 'vit'
  summary = 'the dense ViT / DeiT backbone'


METHODS = (DenseMethod(),)
