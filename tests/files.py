"""Real files in the layouts the loaders read, written by the tests."""
from PIL import Image


def save(path, size=(20, 16), mode="L", value=128, **params):
    """A real image file of constant `value` (format from the extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path, **params)
    return path


def lines(path, *rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(row + "\n" for row in rows))
