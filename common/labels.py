"""The label set: class names in model output order, their aliases and disposal suggestions.

This is the single source of truth for the six classes. Training writes this order
into a model's metadata, the worker maps output indices through it, and the API
lists it in ``/model-info``.
"""

from __future__ import annotations

CLASSES: tuple[str, ...] = ("Kaca", "Logam", "Kertas", "Residu", "Kardus", "Plastik")

ENGLISH_NAMES: dict[str, str] = {
    "Kaca": "glass",
    "Logam": "metal",
    "Kertas": "paper",
    "Residu": "trash",
    "Kardus": "cardboard",
    "Plastik": "plastic",
}

LANGUAGES: tuple[str, ...] = ("id", "en")
DEFAULT_LANGUAGE = "id"

SUGGESTIONS: dict[str, dict[str, str]] = {
    "id": {
        "Kaca": "Bungkus pecahan kaca dengan aman, pisahkan botol utuh, lalu setorkan ke "
        "tempat sampah kaca atau bank sampah.",
        "Logam": "Bilas kaleng, pipihkan, lalu kumpulkan untuk didaur ulang di bank sampah "
        "atau pengepul logam.",
        "Kertas": "Jaga kertas tetap kering dan bersih, lipat rapi, lalu setorkan ke tempat "
        "daur ulang kertas.",
        "Residu": "Buang ke tempat sampah residu; sampah ini sulit didaur ulang dan akan "
        "diangkut ke TPA.",
        "Kardus": "Lepaskan selotip, lipat kardus hingga pipih, lalu setorkan ke bank sampah "
        "atau pengepul kardus.",
        "Plastik": "Bilas dan keringkan plastik, pisahkan tutupnya, lalu masukkan ke tempat "
        "sampah plastik untuk didaur ulang.",
    },
    "en": {
        "Kaca": "Wrap broken glass safely, keep whole bottles apart, and take them to a glass "
        "bin or a waste bank.",
        "Logam": "Rinse and flatten cans, then collect them for recycling at a waste bank or "
        "a scrap-metal dealer.",
        "Kertas": "Keep paper dry and clean, fold it flat, and take it to a paper recycling point.",
        "Residu": "Put it in the residual-waste bin; it is hard to recycle and goes to landfill.",
        "Kardus": "Remove the tape, flatten the box, and take it to a waste bank or a "
        "cardboard collector.",
        "Plastik": "Rinse and dry the plastic, remove the cap, and put it in the plastic bin "
        "for recycling.",
    },
}

_ALIASES: dict[str, str] = {
    alias.casefold(): name for name in CLASSES for alias in (name, ENGLISH_NAMES[name])
}


def resolve_class(name: str) -> str | None:
    """Map a folder or label name (Indonesian or English, any case) to a class name."""
    return _ALIASES.get(name.strip().casefold())


def suggestion(label: str, language: str = DEFAULT_LANGUAGE) -> str:
    """The disposal suggestion for a class, in one of ``LANGUAGES``."""
    return SUGGESTIONS[language][label]
