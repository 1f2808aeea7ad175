"""sampling.py: seeded images, noise modes, seed lists and style mixing, on a tiny generator."""

import numpy as np
import pytest

import sampling
from generator import Generator


def tiny_generator():
    g = Generator(resolution=8, channel_base=128, channel_max=16, z_dim=8, w_dim=8, mapping_layers=2)
    for noise in g.synthesis.noises:
        noise.strength.assign(1.0)                       # starts at 0, where noise changes nothing
    return g


def test_synthesize_with_random_noise_is_fresh_per_image_yet_reproducible():
    g = tiny_generator()
    const = sampling.synthesize(g, [3, 3])
    random = sampling.synthesize(g, [3, 3], noise_mode="random")
    np.testing.assert_allclose(const[0], const[1], atol=1e-5)   # one fixed map: same seed, same image
    assert not np.allclose(random[0], random[1])          # same latent, fresh noise per image
    assert not np.allclose(random[0], const[0])
    np.testing.assert_array_equal(random, sampling.synthesize(g, [3, 3], noise_mode="random"))


@pytest.mark.parametrize("text,expected", [("0-3,7", [0, 1, 2, 3, 7]), ("5", [5]), ("2-2, 9-10", [2, 9, 10])])
def test_seed_lists_and_ranges(text, expected):
    assert sampling.parse_ranges(text) == expected


@pytest.mark.parametrize("text,message", [("a-3", "'a-3' is neither"), ("4-1", "runs backwards"), ("-2", "neither"),
                                          ("1,,2", "'' is neither")])
def test_bad_seed_lists_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        sampling.parse_ranges(text)


def test_style_mixing_takes_the_chosen_layers_from_the_column_seed():
    g = tiny_generator()
    rows, cols, layers = [1, 2], [3, 4, 5], [0, 1]
    cells = sampling.style_mixing_grid(g, rows, cols, mix_layers=layers)            # [(2+1)*(3+1), 8, 8, 1]
    assert cells.shape == (12, 8, 8, 1)
    ws_rows, ws_cols = sampling.styles(g, rows), sampling.styles(g, cols)
    expected = ws_rows[1].copy()
    expected[layers] = ws_cols[2][layers]
    np.testing.assert_allclose(cells[2 * 4 + 3], np.asarray(g.synthesis(expected[None], noise_mode="const"))[0],
                               atol=1e-5)
    np.testing.assert_allclose(cells[3], sampling.synthesize(g, [5])[0], atol=1e-5)   # the column source
    with pytest.raises(ValueError, match="from 0 to 3"):
        sampling.style_mixing_grid(g, rows, cols, mix_layers=[4])


def test_truncation_cutoff_pulls_only_the_first_layers_towards_w_avg():
    g = tiny_generator()
    g.mapping.w_avg.assign(np.linspace(-1, 1, 8, dtype=np.float32))
    free = sampling.styles(g, [4, 5])                                        # [2, num_ws, 8]
    cut = sampling.styles(g, [4, 5], psi=0.5, truncation_cutoff=2)
    w_avg = g.mapping.w_avg.numpy()
    np.testing.assert_allclose(cut[:, :2], w_avg + 0.5 * (free[:, :2] - w_avg), atol=1e-6)
    np.testing.assert_allclose(cut[:, 2:], free[:, 2:], atol=1e-6)
    assert g.num_ws > 2



def test_noise_draws_change_only_the_noise_of_each_latent():
    g = tiny_generator()
    draws = sampling.noise_draws(g, [3, 5], draws=3)                               # [2, 3, 8, 8, 1]
    assert draws.shape == (2, 3, 8, 8, 1)
    assert not np.allclose(draws[0, 0], draws[0, 1])                  # each draw its own noise
    np.testing.assert_array_equal(draws, sampling.noise_draws(g, [3, 5], draws=3))   # reproducible
    for noise in g.synthesis.noises:
        noise.strength.assign(0.0)                                    # no noise: every draw is the latent's image
    quiet = sampling.noise_draws(g, [3, 5], draws=3)
    np.testing.assert_allclose(quiet[:, 0], quiet[:, 2], atol=1e-6)
    np.testing.assert_allclose(quiet[:, 0], sampling.synthesize(g, [3, 5], noise_mode="none"), atol=1e-5)
