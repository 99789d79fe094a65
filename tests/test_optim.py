"""Learning-rate schedules and optimizers picked by name (kmnist_jax.train.optim)."""

import numpy as np
import pytest

from kmnist_jax.config import base as configlib
from kmnist_jax.train import optim
from kmnist_jax.core.errors import UserError


def config(**fields):
  c = configlib.base_config()
  c.update(fields)
  return c


def test_multistep_decays_at_each_milestone_epoch():
  # The manifold-mixup recipe: 0.1, x0.1 from epochs 100 and 150 on.
  c = config(optimizer='sgd', learning_rate=0.1, num_epochs=200,
             lr_schedule='multistep', lr_milestones='100,150', lr_decay=0.1)
  spe = 600  # 60,000 images in batches of 100.
  schedule = optim.create_schedule(c, spe)
  expected = {0: 0.1, 100 * spe - 1: 0.1, 100 * spe: 0.01,
              100 * spe + 1: 0.01, 150 * spe - 1: 0.01, 150 * spe: 0.001,
              200 * spe - 1: 0.001}
  for step, lr in expected.items():
    np.testing.assert_allclose(float(schedule(step)), lr, rtol=1e-6,
                               err_msg=f'step {step}')


def test_multistep_milestones_past_the_run_keep_the_rate():
  # A :smoke or capped proxy run stops before the recipe's milestones.
  c = config(num_epochs=1, lr_schedule='multistep', lr_milestones='100,150',
             learning_rate=0.1)
  schedule = optim.create_schedule(c, 2)
  assert [float(schedule(s)) for s in (0, 1)] == pytest.approx([0.1, 0.1])


@pytest.mark.parametrize('milestones', ['', '150,100', '0,100', '100,100',
                                        '100;150', 'x'])
def test_multistep_bad_milestones_one_line(milestones):
  c = config(lr_schedule='multistep', lr_milestones=milestones)
  with pytest.raises(UserError, match=(
      r"^config.lr_milestones='.*': expected increasing epochs >= 1 "
      r'separated by commas, e\.g\. "100,150", for lr_schedule=multistep$')):
    optim.create_optimizer(c, 10)


def test_multistep_negative_decay():
  c = config(lr_schedule='multistep', lr_milestones='5', lr_decay=-0.1)
  with pytest.raises(UserError,
                     match=r'^config.lr_decay=-0.1: expected a number >= 0$'):
    optim.create_optimizer(c, 10)


def test_unknown_schedule_lists_valid_ones():
  with pytest.raises(UserError, match=(
      r"^config.lr_schedule: unknown lr_schedule 'step'; valid: constant, "
      r'cosine, multistep, onecycle, warmup_cosine$')):
    optim.create_optimizer(config(lr_schedule='step'), 10)


def test_milestones_are_ignored_by_other_schedules():
  c = config(lr_schedule='cosine', learning_rate=0.2, num_epochs=2,
             lr_milestones='1')
  schedule = optim.create_schedule(c, 5)
  np.testing.assert_allclose(float(schedule(5)), 0.1, rtol=1e-6)
