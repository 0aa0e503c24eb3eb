"""Reads an audio file's tags, pictures and stream facts with mutagen (a third-party reader, not
our own) and prints them as JSON, one shape for every format:

    {"kind": "MP3", "id3_version": "2.3", "bitrate_mode": "VBR", "sample_rate": 44100,
     "channels": 1, "length": 3.0, "tags": {"title": "...", ...},
     "pictures": [{"mime": "image/jpeg", "type": 3, "desc": "...", "width": 600, ...}]}

Usage: read_audio.py FILE [PICTURE_OUT]  (the first picture's bytes go to PICTURE_OUT)
"""
import base64
import json
import sys

import mutagen
from mutagen.flac import Picture
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4
from mutagen.oggopus import OggOpus
from mutagen.flac import FLAC

COMMON = ["title", "artist", "album", "year", "track", "genre", "comment"]


def first(value):
    if isinstance(value, list):
        return first(value[0]) if value else None
    return value


def main():
    path = sys.argv[1]
    audio = mutagen.File(path)
    out = {"kind": type(audio).__name__, "tags": {}, "pictures": []}
    info = audio.info
    out["sample_rate"] = getattr(info, "sample_rate", None)
    out["channels"] = getattr(info, "channels", None)
    out["length"] = info.length
    pictures = []
    tags = out["tags"]
    if isinstance(audio, MP3):
        out["bitrate_mode"] = str(info.bitrate_mode).split(".")[-1]
        id3 = audio.tags
        out["id3_version"] = "2.%d" % id3.version[1]
        frames = {"title": "TIT2", "artist": "TPE1", "album": "TALB", "track": "TRCK",
                  "genre": "TCON"}
        for name, frame in frames.items():
            if frame in id3:
                tags[name] = str(id3[frame].text[0])
        for frame in ("TYER", "TDRC"):
            if frame in id3:
                tags["year"] = str(id3[frame].text[0])
        comments = id3.getall("COMM")
        if comments:
            tags["comment"] = str(comments[0].text[0])
        for apic in id3.getall("APIC"):
            pictures.append((apic.mime, int(apic.type), apic.desc, apic.data))
    elif isinstance(audio, MP4):
        atoms = {"title": "\xa9nam", "artist": "\xa9ART", "album": "\xa9alb", "year": "\xa9day",
                 "genre": "\xa9gen", "comment": "\xa9cmt"}
        for name, atom in atoms.items():
            if atom in audio.tags:
                tags[name] = str(first(audio.tags[atom]))
        if "trkn" in audio.tags:
            number, total = audio.tags["trkn"][0]
            tags["track"] = "%d/%d" % (number, total) if total else str(number)
        for cover in audio.tags.get("covr", []):
            mime = "image/png" if cover.imageformat == cover.FORMAT_PNG else "image/jpeg"
            pictures.append((mime, 3, "", bytes(cover)))
    elif isinstance(audio, (OggOpus, FLAC)):
        comments = audio.tags
        names = {"title": ["title"], "artist": ["artist"], "album": ["album"],
                 "year": ["date", "year"], "track": ["tracknumber", "track"],
                 "genre": ["genre"], "comment": ["comment", "description"]}
        for name, keys in names.items():
            for key in keys:
                if key in comments:
                    tags[name] = str(first(comments[key]))
                    break
        blocks = []
        if isinstance(audio, FLAC):
            blocks = list(audio.pictures)
        for encoded in comments.get("metadata_block_picture", []):
            blocks.append(Picture(base64.b64decode(encoded)))
        for block in blocks:
            pictures.append((block.mime, int(block.type), block.desc, block.data,
                             block.width, block.height))
    for picture in pictures:
        entry = {"mime": picture[0], "type": picture[1], "desc": picture[2],
                 "bytes": len(picture[3])}
        if len(picture) > 4:
            entry["width"], entry["height"] = picture[4], picture[5]
        out["pictures"].append(entry)
    if len(sys.argv) > 2 and pictures:
        with open(sys.argv[2], "wb") as file:
            file.write(pictures[0][3])
    print(json.dumps(out))


main()
