"""The one GGUF header reader: metadata and tensor shapes and types, never the tensor data.

The models stage summarises a file's quantization from it (:mod:`successor_heads.models.gguf`);
a ``.gguf`` zoo entry without a model file gets its family and parameter count from it
(:mod:`successor_heads.core.model_derive`).
"""

from __future__ import annotations

import os

#: GGUF metadata value types of fixed size: type id -> struct format character.
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def read_gguf_header(path: str | os.PathLike) -> dict:
    """Parse a GGUF file's header (the GGUF specification in the ggml repository; versions 2 and 3).

    Layout: magic ``GGUF``, ``u32`` version, ``u64`` tensor count, ``u64`` metadata count; the
    metadata entries (string key, ``u32`` value type, value; strings are ``u64`` length + UTF-8
    bytes; arrays are ``u32`` item type + ``u64`` count + items); then per tensor its name,
    ``u32`` n_dims, ``u64`` dims, ``u32`` ggml type and ``u64`` data offset. Big-endian files are
    recognised as ``gguf.GGUFReader`` does (the version's low 16 bits are zero when swapped).
    The file is memory-mapped; tensor data is never touched.

    Returns:
        ``{"version": int, "metadata": {key: value} (numbers and strings; arrays such as the
        vocabulary are skipped), "tensors": [(name, ggml_type_id, n_elements), ...]}`` in file order.

    Raises:
        ValueError: no GGUF magic, version not 2 or 3, or the header runs past the end of the file.
    """
    import mmap
    import struct

    if os.path.getsize(path) < 24:  # magic, version and the two counts
        raise ValueError(f"{path} is not a GGUF file (no GGUF magic; {os.path.getsize(path)} bytes)")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file (no GGUF magic)")
        (version,) = struct.unpack_from("<I", buf, 4)
        order = "<"
        if version & 0xFFFF == 0:  # written on a machine of the other byte order
            order = ">"
            (version,) = struct.unpack_from(">I", buf, 4)
        if version not in (2, 3):
            raise ValueError(f"{path}: GGUF version {version} is not supported (2 and 3 are)")
        u32, u64 = struct.Struct(order + "I"), struct.Struct(order + "Q")
        n_tensors, n_kv = struct.unpack_from(order + "QQ", buf, 8)
        pos = 24
        try:
            def string(pos):
                (n,) = u64.unpack_from(buf, pos)
                end = pos + 8 + n
                if end > len(buf):
                    raise ValueError
                return buf[pos + 8:end], end

            def skip(pos, vtype):
                """Offset just past a value of type ``vtype`` starting at ``pos``."""
                if vtype in _GGUF_SCALARS:
                    return pos + struct.calcsize(_GGUF_SCALARS[vtype])
                if vtype == _GGUF_STRING:
                    (n,) = u64.unpack_from(buf, pos)
                    return pos + 8 + n
                if vtype == _GGUF_ARRAY:
                    itype, count = struct.unpack_from(order + "IQ", buf, pos)
                    pos += 12
                    if itype in _GGUF_SCALARS:
                        return pos + count * struct.calcsize(_GGUF_SCALARS[itype])
                    for _ in range(count):  # strings (e.g. the vocabulary) or nested arrays
                        pos = skip(pos, itype)
                    return pos
                raise ValueError(f"unknown GGUF value type {vtype}")

            meta = {}
            for _ in range(n_kv):
                key, pos = string(pos)
                (vtype,) = u32.unpack_from(buf, pos)
                pos += 4
                if vtype in _GGUF_SCALARS:
                    (meta[bytes(key).decode("utf-8", "replace")],) = struct.unpack_from(order + _GGUF_SCALARS[vtype], buf, pos)
                elif vtype == _GGUF_STRING:
                    meta[bytes(key).decode("utf-8", "replace")] = bytes(string(pos)[0]).decode("utf-8", "replace")
                pos = skip(pos, vtype)
            tensors = []
            for _ in range(n_tensors):
                name, pos = string(pos)
                (n_dims,) = u32.unpack_from(buf, pos)
                dims = struct.unpack_from(f"{order}{n_dims}Q", buf, pos + 4)
                pos += 4 + 8 * n_dims
                (ggml_type,) = u32.unpack_from(buf, pos)
                pos += 12  # type + data offset
                n_elem = 1
                for dim in dims:
                    n_elem *= int(dim)
                tensors.append((bytes(name).decode("utf-8"), int(ggml_type), n_elem))
        except struct.error as e:
            raise ValueError(f"{path}: GGUF header cut short ({e})") from e
        except ValueError as e:
            raise ValueError(f"{path}: GGUF header unreadable ({str(e) or 'runs past the end of the file'})") from e
    return {"version": int(version), "metadata": meta, "tensors": tensors}
