"""Track-level stratified split and the demo data generator."""

from __future__ import annotations

import numpy as np
import pytest

from genre_classification.demo_data import GENRES, synthesize_clip
from genre_classification.split import assign_splits

FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def tracks(genres: dict[str, int]) -> list[dict]:
    return [{"genre": g, "track": f"{g}.{i:05d}"} for g, n in genres.items() for i in range(n)]


def test_stratified_seeded_and_complete():
    rows = tracks({"jazz": 20, "metal": 20, "pop": 7})
    split = assign_splits(rows, FRACTIONS, seed=1)
    assert len(split) == len(rows)
    assert {(r["genre"], r["track"]) for r in split} == {(r["genre"], r["track"]) for r in rows}
    for genre, n_test in (("jazz", 3), ("metal", 3), ("pop", 1)):
        chosen = [r["split"] for r in split if r["genre"] == genre]
        assert chosen.count("test") == n_test and chosen.count("val") == n_test
    assert split == assign_splits(list(reversed(rows)), FRACTIONS, seed=1)
    assert split != assign_splits(rows, FRACTIONS, seed=2)


def test_adding_a_genre_keeps_the_other_assignments():
    before = assign_splits(tracks({"jazz": 10}), FRACTIONS, seed=3)
    after = assign_splits(tracks({"jazz": 10, "rock": 10}), FRACTIONS, seed=3)
    assert [r for r in after if r["genre"] == "jazz"] == before


@pytest.mark.parametrize("genre", sorted(GENRES))
def test_demo_clips_are_deterministic_and_bounded(genre):
    a = synthesize_clip(genre, 2.0, 22050, seed=5)
    assert a.shape == (44100,) and a.dtype == np.float32
    assert 0.4 < np.abs(a).max() <= 0.9
    np.testing.assert_array_equal(a, synthesize_clip(genre, 2.0, 22050, seed=5))
    assert not np.array_equal(a, synthesize_clip(genre, 2.0, 22050, seed=6))


def test_demo_genres_differ_in_tempo_and_brightness():
    import librosa

    def tempo_and_centroid(genre):
        clip = synthesize_clip(genre, 8.0, 22050, seed=0)
        tempo = librosa.feature.tempo(y=clip, sr=22050)[0]
        return tempo, librosa.feature.spectral_centroid(y=clip, sr=22050).mean()

    metal_tempo, metal_centroid = tempo_and_centroid("metal")
    classical_tempo, classical_centroid = tempo_and_centroid("classical")
    assert metal_centroid > 2 * classical_centroid
    assert tempo_and_centroid("disco")[0] > tempo_and_centroid("reggae")[0]
