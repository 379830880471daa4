import io
from collections import Counter

from PIL import Image

from pipeline import synthetic


def test_deterministic_and_prefix_stable():
    a = [synthetic.render(7, i) for i in range(30)]
    b = [synthetic.render(7, i) for i in range(30)]
    assert [x.data for x in a] == [x.data for x in b]
    assert a[5].id == "syn-00005"
    assert synthetic.render(8, 5).data != a[5].data


def test_looks_like_an_image_search():
    items = [synthetic.render(0, i) for i in range(400)]
    kinds = Counter(it.kind for it in items)
    dups = [it for it in items if it.duplicate_of]
    assert 0.10 <= kinds["offtopic"] / 400 <= 0.20
    originals = {it.duplicate_of for it in dups}
    assert 0.08 <= len(originals) / kinds["character"] <= 0.25
    assert any(it.transform == "exact" for it in dups)
    assert all(synthetic.render(0, int(it.duplicate_of[4:])).kind == "character" for it in dups)
    formats, modes, sides = Counter(), Counter(), []
    for it in items:
        img = Image.open(io.BytesIO(it.data))
        formats[img.format] += 1
        modes[img.mode] += 1
        sides += list(img.size)
    assert formats["JPEG"] > 100 and formats["PNG"] > 50
    assert modes["RGBA"] > 10  # some have transparency
    assert min(sides) >= 32 and max(sides) <= 960
    assert {it.subject for it in items if it.kind == "offtopic"} == set(synthetic.OFFTOPIC)
    assert {it.subject for it in items if it.kind == "character"} == set(synthetic.POSES)
