"""How a processor call's arguments reach its text path and its image processor.

Part of the flat Hub payload: imports nothing. transformers 5 (and sentence-transformers, which always sends
`audio_kwargs={"padding": True}`) may group options per modality; plain keywords keep working. One router for every
processor of the package, so both families accept the same forms and refuse the same mistakes; likewise one check of
the `text` argument and one warning class for texts that lost tokens.
"""

from __future__ import annotations

MODALITY_GROUPS = ("text_kwargs", "images_kwargs", "common_kwargs", "audio_kwargs", "videos_kwargs")


class LongTextTruncationWarning(UserWarning):
    """Some texts were longer than the model's context and lost their tail."""


def text_list(owner: str, text) -> list[str]:
    """`text` as a non-empty list of strings: a string becomes a list of one; a number, None inside the list or an
    empty list is refused with a TypeError / ValueError that says what was given."""
    if isinstance(text, str):
        return [text]
    if isinstance(text, (bytes, dict)) or not hasattr(text, "__iter__"):
        shown = repr(text) if len(repr(text)) <= 40 else repr(text)[:37] + "..."
        raise TypeError(f"{owner}: text must be a string or a list of strings, got {type(text).__name__} {shown}.")
    texts = list(text)
    if not texts:
        raise ValueError(f"{owner} got an empty list of texts: there is nothing to encode.")
    bad = [type(item).__name__ for item in texts if not isinstance(item, str)]
    if bad:
        raise TypeError(
            f"{owner}: text must be a string or a list of strings, got a list with {len(bad)} item(s) of another "
            f"type (the first: {bad[0]})."
        )
    return texts


def image_option_names(image_processor) -> frozenset | None:
    """The keywords an image processor declares (transformers' `valid_kwargs`), or None when it declares none."""
    names = getattr(getattr(image_processor, "valid_kwargs", None), "__annotations__", None)
    return frozenset(names) if names else None


def route_options(owner: str, kwargs: dict, text_options, image_processor, with_images: bool):
    """(text options, image options, return_tensors or None) from flat keywords and the grouped dicts.

    Flat and `common_kwargs` keys go to the text path when they are text options, else to the image processor;
    `return_tensors` applies to both; `audio_kwargs` / `videos_kwargs` have nothing to apply to and are ignored. A key
    neither path takes raises a TypeError naming it.
    """
    groups = {name: kwargs.pop(name, None) or {} for name in MODALITY_GROUPS}
    for name, group in groups.items():
        if not isinstance(group, dict):
            raise TypeError(f"{owner}: {name} must be a dict, got {type(group).__name__}.")
    image_names = image_option_names(image_processor)
    text, image, return_tensors = {}, {}, None

    def refuse(where: str, key: str):
        takes = f"those of {type(image_processor).__name__}" if image_names is None else sorted(image_names)
        raise TypeError(
            f"{owner} got an unknown {where} argument {key!r}: text options are {sorted(text_options)}, image options "
            f"{takes}{'' if with_images else ' (and only with images)'}."
        )

    for where, options in (("common_kwargs", groups["common_kwargs"]), ("keyword", kwargs)):
        for key, value in options.items():
            if key == "return_tensors":
                return_tensors = value
            elif key in text_options:
                text[key] = value
            elif (image_names is None and with_images) or (image_names is not None and key in image_names):
                image[key] = value
            else:
                refuse(where, key)
    for key, value in groups["text_kwargs"].items():
        if key == "return_tensors":
            return_tensors = value
        elif key in text_options:
            text[key] = value
        else:
            refuse("text_kwargs", key)
    for key, value in groups["images_kwargs"].items():
        if key == "return_tensors":
            return_tensors = value
        elif (image_names is None and with_images) or (image_names is not None and key in image_names):
            image[key] = value
        else:
            refuse("images_kwargs", key)
    return text, image, return_tensors


__all__ = ["MODALITY_GROUPS", "LongTextTruncationWarning", "image_option_names", "route_options", "text_list"]
