"""When training stops to evaluate (`--eval-every-steps`)."""

from trainer.selection import eval_points


def test_eval_points_every_n_steps_and_at_the_end():
    assert eval_points(0, 3000, 1000) == [1000, 2000, 3000]
    assert eval_points(0, 2500, 1000) == [1000, 2000, 2500]
    # A resumed run continues the same grid, not one shifted by where it resumed.
    assert eval_points(1500, 3000, 1000) == [2000, 3000]
    assert eval_points(0, 3000, None) == [3000]
    assert eval_points(3000, 3000, 1000) == [3000]
