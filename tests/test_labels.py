import pytest

from common.labels import CLASSES, ENGLISH_NAMES, LANGUAGES, resolve_class, suggestion


def test_classes_are_the_seed_order():
    assert CLASSES == ("Kaca", "Logam", "Kertas", "Residu", "Kardus", "Plastik")


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        ("Kaca", "Kaca"),
        ("glass", "Kaca"),
        ("GLASS", "Kaca"),
        ("cardboard", "Kardus"),
        ("trash", "Residu"),
        (" plastik ", "Plastik"),
        ("kertas", "Kertas"),
        ("Metal", "Logam"),
        ("__MACOSX", None),
        ("bottles", None),
    ],
)
def test_resolve_class_accepts_both_languages_in_any_case(folder, expected):
    assert resolve_class(folder) == expected


def test_every_class_has_a_distinct_suggestion_in_every_language():
    for language in LANGUAGES:
        texts = {suggestion(label, language) for label in CLASSES}
        assert len(texts) == len(CLASSES)
    assert suggestion("Kaca", "id") != suggestion("Kaca", "en")
    assert set(ENGLISH_NAMES) == set(CLASSES)
