"""File names as text: valid UTF-8, and safe to show in one line.

POSIX file names are bytes; Python reads those that are not UTF-8 with
surrogateescape. `as_utf8` makes such a name writable as UTF-8 (a CSV cell),
`display_name` makes any name safe for a terminal or a picture.
"""

from __future__ import annotations

import unicodedata

_ESCAPES = {'\t': '\\t', '\n': '\\n', '\r': '\\r'}


def as_utf8(name: str) -> str:
  """`name` encodable as UTF-8: the bytes of a POSIX file name that are not
  UTF-8 (read with surrogateescape) become the text `\\xff`."""
  try:
    return name.encode('utf-8', 'surrogateescape').decode(
        'utf-8', 'backslashreplace')
  except UnicodeEncodeError:  # A lone surrogate that is not an escaped byte.
    return name.encode('utf-8', 'backslashreplace').decode('utf-8')


def display_name(name: str) -> str:
  """`name` safe to show in a terminal or a picture, one line.

  Bytes that are not UTF-8 (a POSIX file name read with surrogateescape)
  become `\\xff`; control, format (such as bidirectional overrides) and
  line-separator characters become `\\t`, `\\n`, `\\r`, `\\x1b`, `\\u202e`.
  Everything else, `$ = + - @` and backslashes included, is kept as is.
  """
  out = []
  for c in as_utf8(name):
    if unicodedata.category(c) in ('Cc', 'Cf', 'Cs', 'Zl', 'Zp'):
      o = ord(c)
      out.append(_ESCAPES.get(c) or (f'\\x{o:02x}' if o < 0x100 else
                                     f'\\u{o:04x}' if o < 0x10000 else
                                     f'\\U{o:08x}'))
    else:
      out.append(c)
  return ''.join(out)
