"""DeiT's augmentations: Mixup/CutMix against hand derivations, each RandAugment op against
PIL's own operation at the argument timm derives, random-erasing statistics, repeated
augmentation's order, soft-target losses, and determinism of augmented runs across a resume."""
import json

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from tests import fake_data
from tokensparse import losses
from tokensparse.data import augment
from tokensparse.data.pipeline import Data, RepeatedOrder
from tokensparse import checkpoint
from tokensparse.train import loop


class ScriptedRng:
  """Stands in for np.random.Generator with the draws a hand derivation fixes."""

  def __init__(self, random=(), integers=(), beta=()):
    self._random, self._integers, self._beta = list(random), list(integers), list(beta)

  def random(self):
    return self._random.pop(0)

  def integers(self, low, high=None):
    value = self._integers.pop(0)
    assert (0 if high is None else low) <= value < (low if high is None else high)
    return value

  def beta(self, a, b):
    return self._beta.pop(0)


# ----------------------------------------------------------------------------- Mixup / CutMix
def test_cutmix_box_and_lambda_correction_by_hand():
  # 10 x 8 image, lam 0.64: sqrt(1 - lam) = 0.6 -> cut 6 x int(4.8) = 4. Centre (1, 7): rows
  # clip(1 - 3, 0) .. 1 + 3 = 0..4, columns 7 - 2 .. clip(7 + 2, 8) = 5..8; the box covers
  # 4 x 3 = 12 of 80 pixels, so the corrected lambda is 1 - 12 / 80 = 0.85.
  box, lam = augment.cutmix_box(10, 8, 0.64, ScriptedRng(integers=[1, 7]))
  assert box == (0, 4, 5, 8) and lam == pytest.approx(0.85)
  # An interior centre keeps the full 6 x 4 box: lam = 1 - 24 / 80.
  box, lam = augment.cutmix_box(10, 8, 0.64, ScriptedRng(integers=[5, 4]))
  assert box == (2, 8, 2, 6) and lam == pytest.approx(0.7)


def images_and_labels():
  images = np.stack([np.full((10, 8, 3), v, np.float32) for v in (1.0, 2.0, 3.0, 4.0)])
  return images, np.array([0, 1, 2, 3])


def test_cutmix_pastes_the_reversed_batch_and_mixes_labels_by_the_box_area():
  images, labels = images_and_labels()
  mix = augment.Mix(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5, smoothing=0.1)
  # draws: mix? 0.3 < 1; cutmix? 0.2 < 0.5 -> yes; Beta -> 0.64; centre (1, 7) as above.
  out, targets, lam = mix(images, labels, 4, ScriptedRng(random=[0.3, 0.2], beta=[0.64],
                                                          integers=[1, 7]))
  assert lam == pytest.approx(0.85)
  for i in range(4):
    expected = np.full((10, 8, 3), images[i, 0, 0, 0])
    expected[0:4, 5:8] = images[3 - i, 0, 0, 0]        # partner: the batch reversed
    np.testing.assert_array_equal(out[i], expected)
  # smoothing 0.1 over 4 classes: 0.925 on the label, 0.025 elsewhere; then 0.85 / 0.15.
  on, off = 0.925, 0.025
  np.testing.assert_allclose(targets[0], [0.85 * on + 0.15 * off, off, off,
                                          0.85 * off + 0.15 * on], rtol=1e-6)
  np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(images[0], 1.0)         # the input is left as it was


def test_mixup_blends_with_the_reversed_batch():
  images, labels = images_and_labels()
  mix = augment.Mix(smoothing=0.0)
  out, targets, lam = mix(images, labels, 4, ScriptedRng(random=[0.3, 0.9], beta=[0.7]))
  assert lam == pytest.approx(0.7)
  np.testing.assert_allclose(out[:, 0, 0, 0], [0.7 * 1 + 0.3 * 4, 0.7 * 2 + 0.3 * 3,
                                               0.7 * 3 + 0.3 * 2, 0.7 * 4 + 0.3 * 1], rtol=1e-6)
  np.testing.assert_allclose(targets[1], [0, 0.7, 0.3, 0], atol=1e-7)


def test_mix_switch_probability_and_lambda_distribution():
  mix, rng = augment.Mix(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5), \
      np.random.default_rng(0)
  draws = [mix.params(rng) for _ in range(4000)]
  cutmix = np.array([c for _, c in draws])
  lams = np.array([l for l, _ in draws])
  assert abs(cutmix.mean() - 0.5) < 4 * np.sqrt(0.25 / 4000)
  assert abs(lams.mean() - 0.5) < 0.03                     # both Betas are symmetric
  # Beta(1, 1) is uniform (variance 1/12); Beta(0.8, 0.8) has variance 1 / (4 * 2.6).
  assert lams[cutmix].var() == pytest.approx(1 / 12, rel=0.1)
  assert lams[~cutmix].var() == pytest.approx(1 / 10.4, rel=0.1)
  assert augment.Mix(prob=0.0).params(rng) == (1.0, False)


def test_mix_refuses_an_odd_batch():
  images, labels = images_and_labels()
  with pytest.raises(ValueError, match='must be even'):
    augment.Mix()(images[:3], labels[:3], 4, np.random.default_rng(0))


def test_soft_target_loss_and_accuracy():
  logits = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
  labels = jnp.array([0, 1])
  soft = jnp.asarray(augment.soft_targets(np.array([0, 1]), 3, 0.1))
  np.testing.assert_allclose(losses.cross_entropy(logits, soft),
                             losses.cross_entropy(logits, labels, label_smoothing=0.1), rtol=1e-6)
  mixed = 0.6 * soft + 0.4 * soft[::-1]
  expected = -(mixed * jax_log_softmax(logits)).sum(-1)
  np.testing.assert_allclose(losses.cross_entropy(logits, mixed), expected, rtol=1e-6)
  np.testing.assert_array_equal(losses.correct(logits, mixed), [1.0, 0.0])


def jax_log_softmax(x):
  x = np.asarray(x, np.float64)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


# ----------------------------------------------------------------------------- RandAugment
def photo(seed=0):
  """A smooth, high-contrast 40 x 48 RGB image, so every op changes something."""
  y, x = np.mgrid[0:40, 0:48]
  rng = np.random.default_rng(seed)
  image = np.stack([x * 5, y * 6, (x + y) * 3], -1) + rng.integers(0, 20, (40, 48, 3))
  return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


FILL, BICUBIC = (124, 116, 104), Image.BICUBIC
# Magnitude 9, sign negated (scripted draw 0.7 > 0.5): PIL's call with the argument timm's
# LEVEL_TO_ARG gives, worked out by hand.
AT_M9 = {
    'AutoContrast': lambda im: ImageOps.autocontrast(im),
    'Equalize': lambda im: ImageOps.equalize(im),
    'Invert': lambda im: ImageOps.invert(im),
    'Rotate': lambda im: im.rotate(-27.0, resample=BICUBIC, fillcolor=FILL),
    'Posterize': lambda im: ImageOps.posterize(im, 3),                 # int(0.9 * 4)
    'PosterizeIncreasing': lambda im: ImageOps.posterize(im, 1),       # 4 - 3
    'Solarize': lambda im: ImageOps.solarize(im, 230),                 # int(0.9 * 256)
    'SolarizeIncreasing': lambda im: ImageOps.solarize(im, 26),        # 256 - 230
    'Color': lambda im: ImageEnhance.Color(im).enhance(1.72),          # 0.9 * 1.8 + 0.1
    'Contrast': lambda im: ImageEnhance.Contrast(im).enhance(1.72),
    'Brightness': lambda im: ImageEnhance.Brightness(im).enhance(1.72),
    'Sharpness': lambda im: ImageEnhance.Sharpness(im).enhance(1.72),
    'ColorIncreasing': lambda im: ImageEnhance.Color(im).enhance(0.19),   # 1 - 0.81
    'ContrastIncreasing': lambda im: ImageEnhance.Contrast(im).enhance(0.19),
    'BrightnessIncreasing': lambda im: ImageEnhance.Brightness(im).enhance(0.19),
    'SharpnessIncreasing': lambda im: ImageEnhance.Sharpness(im).enhance(0.19),
    'ShearX': lambda im: im.transform(im.size, Image.AFFINE, (1, -0.27, 0, 0, 1, 0),
                                      resample=BICUBIC, fillcolor=FILL),
    'ShearY': lambda im: im.transform(im.size, Image.AFFINE, (1, 0, 0, -0.27, 1, 0),
                                      resample=BICUBIC, fillcolor=FILL),
    'TranslateXRel': lambda im: im.transform(im.size, Image.AFFINE, (1, 0, -0.405 * 48, 0, 1, 0),
                                             resample=BICUBIC, fillcolor=FILL),
    'TranslateYRel': lambda im: im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, -0.405 * 40),
                                             resample=BICUBIC, fillcolor=FILL),
}


@pytest.mark.parametrize('name', sorted(set(augment.OPS) | set(augment.INCREASING_OPS)))
def test_each_rand_augment_op_equals_pil_at_magnitude_9(name):
  image = photo()
  arg = augment.op_argument(name, 9.0, ScriptedRng(random=[0.7]))
  ours = np.asarray(augment.apply_op(image, name, arg, fill=FILL, resample=BICUBIC))
  if name == 'SolarizeAdd':  # not a PIL op: add int(0.9 * 110) = 99 below 128, saturating
    pixels = np.asarray(image).astype(int)
    reference = np.where(pixels < 128, np.minimum(255, pixels + 99), pixels)
  else:
    reference = np.asarray(AT_M9[name](image))
  np.testing.assert_array_equal(ours, reference)
  assert not np.array_equal(ours, np.asarray(image))


def test_posterize_to_zero_bits_is_black():
  # PosterizeIncreasing at magnitude 10 keeps 4 - int(4) = 0 bits: every pixel & 0 = 0 (what
  # PIL's own lookup table gave before Pillow began to refuse bits < 1).
  assert augment.op_argument('PosterizeIncreasing', 10.0, None) == 0
  out = augment.apply_op(photo(), 'PosterizeIncreasing', 0, fill=FILL, resample=BICUBIC)
  np.testing.assert_array_equal(np.asarray(out), np.zeros((40, 48, 3), np.uint8))


def test_normalize_is_bit_identical_to_its_formula():
  from tokensparse.data.pipeline import normalize
  rng = np.random.default_rng(0)
  for shape, mean, std in [((4, 28, 28, 1), (0.5,), (0.5,)),
                           ((2, 9, 7, 3), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]:
    x = rng.integers(0, 256, shape).astype(np.uint8)
    expected = (x.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / \
        np.asarray(std, np.float32)
    np.testing.assert_array_equal(normalize(x, mean, std), expected)


def test_inception_crop_in_pil_equals_the_numpy_crop():
  from tokensparse.data import pipeline
  image = np.asarray(photo())
  for seed in range(10):
    a = pipeline.random_resized_crop(image, np.random.default_rng(seed), 24, interpolation='bicubic')
    b = pipeline.random_resized_crop(image, np.random.default_rng(seed), 24,
                                     interpolation='bicubic', as_pil=True)
    np.testing.assert_array_equal(a, pipeline.from_pil(b))


def test_rand_augment_policy_string():
  ra = augment.RandAugment.from_policy('rand-m9-mstd0.5-inc1')
  assert (ra.ops, ra.magnitude, ra.magnitude_std, ra.num_layers, ra.prob, ra.fill) == (
      augment.INCREASING_OPS, 9.0, 0.5, 2, 0.5, FILL)   # fill: round(255 * ImageNet mean)
  assert len(ra.ops) == 15 and augment.RandAugment.from_policy('rand-m7-n3').ops == augment.OPS
  assert augment.RandAugment.from_policy('rand-m7-n3').num_layers == 3
  with pytest.raises(ValueError, match=r"data.rand_augment='rand-m9-x3'.*unknown section 'x3'"):
    augment.RandAugment.from_policy('rand-m9-x3')
  with pytest.raises(ValueError, match='starts with "rand-"'):
    augment.RandAugment.from_policy('m9-mstd0.5')


def test_rand_augment_draws_ops_with_replacement_each_at_probability_half():
  # With p = 1 and m = 0 every drawn op is applied at zero strength; counting calls through a
  # patched apply_op measures the draws: 2 per image, uniform over the 15 ops.
  ra = augment.RandAugment.from_policy('rand-m9-mstd0.5-inc1')
  calls = []
  original = augment.apply_op
  augment.apply_op = lambda image, name, arg, **kw: calls.append(name) or image
  try:
    rng = np.random.default_rng(0)
    image = np.asarray(photo())
    for _ in range(3000):
      np.testing.assert_array_equal(ra(image, rng), image)
  finally:
    augment.apply_op = original
  # 6000 draws, each applied with probability 0.5.
  assert abs(len(calls) / 6000 - 0.5) < 4 * np.sqrt(0.25 / 6000)
  counts = np.array([calls.count(op) for op in ra.ops])
  assert counts.min() > 0.6 * len(calls) / 15 and counts.max() < 1.4 * len(calls) / 15


# ----------------------------------------------------------------------------- random erasing
def test_random_erasing_statistics():
  rng = np.random.default_rng(0)
  erased, areas, aspects, values = 0, [], [], []
  for _ in range(4000):
    image = augment.random_erase(np.zeros((32, 32, 3), np.float32), rng, prob=0.25)
    box = np.argwhere(image.any(-1))
    if len(box):
      erased += 1
      (y0, x0), (y1, x1) = box.min(0), box.max(0) + 1
      assert image[y0:y1, x0:x1].all()                   # one solid rectangle
      areas.append((y1 - y0) * (x1 - x0) / 1024)
      aspects.append((y1 - y0) / (x1 - x0))
      values.append(image[y0:y1, x0:x1].ravel())
  assert abs(erased / 4000 - 0.25) < 4 * np.sqrt(0.25 * 0.75 / 4000)
  # Area fraction in [0.02, 1/3] and aspect in [0.3, 3.3], up to rounding of the sides.
  assert 0.01 < min(areas) and max(areas) < 0.4 and np.mean(areas) == pytest.approx(0.177, abs=0.02)
  assert 0.2 < min(aspects) and max(aspects) < 4.5
  values = np.concatenate(values)
  assert abs(values.mean()) < 0.01 and values.std() == pytest.approx(1.0, abs=0.01)


# ----------------------------------------------------------------------------- in the pipeline
def test_repeated_order_reads_a_third_of_each_epoch_three_times():
  shuffled = [7, 3, 5, 1, 0, 2, 4, 6, 8] + [8, 6, 4, 2, 0, 1, 3, 5, 7]   # two epochs of 9
  order = RepeatedOrder(shuffled, 9, 3)
  assert [order(k) for k in range(18)] == [7, 7, 7, 3, 3, 3, 5, 5, 5, 8, 8, 8, 6, 6, 6, 4, 4, 4]


DEIT = {'data.to_rgb': True, 'data.mean': (0.485, 0.456, 0.406), 'data.std': (0.229, 0.224, 0.225),
        'data.augment': 'inception_crop', 'data.interpolation': 'bicubic',
        'data.rand_augment': 'rand-m9-mstd0.5-inc1', 'data.random_erase': 0.25,
        'data.mixup': 0.8, 'data.cutmix': 1.0, 'data.repeated_aug': 3, 'label_smoothing': 0.1}


def test_augmented_batches_are_soft_deterministic_and_repeat(tmp_path):
  config = fake_data.tiny_config(tmp_path, **DEIT)
  a, b = Data(config, local_devices=2), Data(config, local_devices=2)
  batch = a.train_batch(3)
  assert batch['image'].shape == (2, 8, 28, 28, 3) and batch['image'].dtype == np.float32
  assert batch['label'].shape == (2, 8, 10)
  np.testing.assert_allclose(batch['label'].sum(-1), 1.0, rtol=1e-6)
  for key in ('image', 'label'):
    np.testing.assert_array_equal(batch[key], b.train_batch(3)[key])
  # The raw index stream: each example three times in a row, a new shuffle each epoch.
  epoch = np.concatenate([a.train_indices[s] for s in range(6)]).reshape(32, 3)  # 96 examples
  assert (epoch == epoch[:, :1]).all() and len(set(epoch[:, 0])) == 32


def test_threads_do_not_change_the_batches(tmp_path):
  one = Data(fake_data.tiny_config(tmp_path, **DEIT), local_devices=2)
  three = Data(fake_data.tiny_config(tmp_path, **{**DEIT, 'data.threads': 3}), local_devices=2)
  assert three.threads == 3
  for key in ('image', 'label'):
    np.testing.assert_array_equal(one.train_batch(5)[key], three.train_batch(5)[key])
  for a, b in zip(one.eval_iter(), three.eval_iter()):
    np.testing.assert_array_equal(a['image'], b['image'])


def test_augmented_run_resumes_to_the_same_parameters(tmp_path, monkeypatch):
  config = fake_data.tiny_config(tmp_path, **DEIT)
  loop.train_and_evaluate(config, str(tmp_path / 'straight'))
  with monkeypatch.context() as m:  # preempted after step 2
    m.setattr(loop.Preemption, 'stop_at', lambda self, step: step >= 2)
    assert loop.train_and_evaluate(config, str(tmp_path / 'resumed'))['preempted']
  loop.train_and_evaluate(config, str(tmp_path / 'resumed'))

  def final_params(workdir):
    mngr = checkpoint.manager(workdir)
    restored = mngr.restore(4, args=checkpoint.ocp.args.Composite(
        state=checkpoint.ocp.args.StandardRestore()))
    return restored['state']['params']
  a, b = final_params(str(tmp_path / 'straight')), final_params(str(tmp_path / 'resumed'))
  import jax
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, atol=1e-6)
  train = [json.loads(l) for l in open(tmp_path / 'resumed' / 'metrics.jsonl')
           if '"train"' in l]
  assert all(np.isfinite(l['loss']) for l in train)


def test_bad_augmentation_fields_name_the_field(tmp_path):
  for field, value, message in [('data.rand_augment', 'rand-q5', 'data.rand_augment'),
                                ('data.random_erase', 1.5, 'data.random_erase=1.5'),
                                ('data.repeated_aug', 0, 'data.repeated_aug=0'),
                                ('data.interpolation', 'lanczos', 'data.interpolation'),
                                ('data.threads', -1, 'data.threads=-1')]:
    with pytest.raises(ValueError, match=message):
      Data(fake_data.tiny_config(tmp_path, **{field: value}), local_devices=2)
  with pytest.raises(ValueError, match='batch per process must be even'):
    Data(fake_data.tiny_config(tmp_path, batch_size=18, **{'data.mixup': 0.8}), local_devices=1,
         process_count=2)
