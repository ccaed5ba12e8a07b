"""The toy family's animator: a video-driven one, each driving frame rendered on the source."""

import jax
import jax.numpy as jnp

from jaxtalk.inference.animator import Animator, Driver
from jaxtalk.models.pixels import to_model_range
from tests.toy_family.model import ToyPortrait


class ToyAnimator(Animator):
    driver = Driver.VIDEO
    chunk = 2

    def __init__(self, params, size):
        self.size, self._params, self._model = size, params, ToyPortrait()
        self._render = jax.jit(lambda p, s, d: self._model.apply({"params": p}, s, d))

    @classmethod
    def from_stored(cls, stored, path, size=8, **options):
        return cls(stored["params"], size)

    def prepare(self, source):
        return to_model_range(jnp.asarray(source)[None])

    def drive(self, state, steps):
        driving = to_model_range(jnp.asarray(steps))
        return self._render(self._params, jnp.repeat(state, len(steps), 0), driving)


ANIMATORS = {"toy_portrait": ToyAnimator}
