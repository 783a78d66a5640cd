"""The multipart form of an upload: one or more files, each an ``audio`` part, and a few short fields.

Werkzeug opens a spool file for every file part of a form, so a form of a thousand file parts held
a thousand descriptors until the request ended, and a few such forms at once made every upload fail
with EMFILE.  Here a file part other than ``audio``, more ``audio`` files than the server takes in
one request (``api.max_files_per_request``), or more than :data:`MAX_FORM_FIELDS` other parts is
refused with a 400 as soon as the parser meets it, before it opens anything for it; whatever was
already opened is closed at once.
"""

from __future__ import annotations

from werkzeug.formparser import FormDataParser, MultiPartParser

from uvrd.api.errors import ApiError

AUDIO_FIELD = "audio"
# The fields a submission reads (hook_url, priority, model, output_format, options), with room for
# a few a client adds.
MAX_FORM_FIELDS = 16


class AudioPartParser(MultiPartParser):
    def __init__(self, *args, max_files: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_files = max_files
        self.fields = 0
        self.audio: list = []

    def start_file_streaming(self, event, total_content_length):
        if event.name != AUDIO_FIELD:
            raise ApiError(400, f"only the form field {AUDIO_FIELD!r} may be a file, not {event.name!r}")
        if len(self.audio) >= self.max_files:
            raise ApiError(400, f"the form has more than {self.max_files} {AUDIO_FIELD!r} files, "
                                "the most this server takes in one request")
        self.audio.append(super().start_file_streaming(event, total_content_length))
        return self.audio[-1]

    def get_part_charset(self, headers) -> str:
        # Called once for every field that is not a file, as it ends: where the fields are counted.
        self.fields += 1
        if self.fields > MAX_FORM_FIELDS:
            raise ApiError(400, f"the form has more than {MAX_FORM_FIELDS} fields besides its {AUDIO_FIELD!r} files")
        return super().get_part_charset(headers)

    def parse(self, stream, boundary, content_length):
        try:
            return super().parse(stream, boundary, content_length)
        except BaseException:
            for audio in self.audio:
                audio.close()  # the spool's temporary file goes with it
            raise


class AudioFormParser(FormDataParser):
    def __init__(self, *args, max_files: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_files = max_files

    def _parse_multipart(self, stream, mimetype, content_length, options):
        # Werkzeug's own, with the parser above (FormDataParser names MultiPartParser directly).
        parser = AudioPartParser(stream_factory=self.stream_factory, max_form_memory_size=self.max_form_memory_size,
                                 max_form_parts=self.max_form_parts, cls=self.cls, max_files=self.max_files)
        boundary = options.get("boundary", "").encode("ascii")
        if not boundary:
            raise ValueError("Missing boundary")
        form, files = parser.parse(stream, boundary, content_length)
        return stream, form, files
