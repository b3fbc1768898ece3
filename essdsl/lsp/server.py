"""The pygls language server behind ``essdsl lsp``.

Documents are synced in full (the client sends the whole text on each change):
.space files are small, and it spares the server from re-deriving the client's
line breaks to apply incremental edits.  Each version is analysed at most once
(:func:`SpaceServer.analysis`), by whichever comes first: a request for it or
the diagnostics task.  A change after a pause is checked at once; a change that
arrives while the server is still catching up (within one check's duration of
the last check's end: keystrokes faster than a large file checks) waits that
long (at most ``MAX_DEBOUNCE_S``) and is checked only if no newer change came
meanwhile, so a burst of keystrokes is checked once instead of queueing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Optional

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from essdsl import __version__
from essdsl.lsp import features
from essdsl.lsp.analysis import Analysis, analyze, unit_counter

MAX_DEBOUNCE_S = 0.1
log = logging.getLogger(__name__)


class SpaceServer(LanguageServer):
    def __init__(self, sizes: Optional[dict] = None):
        super().__init__("essdsl", __version__, text_document_sync_kind=types.TextDocumentSyncKind.Full)
        self.sizes = sizes or {}
        self._analyses: dict[str, tuple[Optional[int], Analysis]] = {}
        self._check_seconds: dict[str, float] = {}
        self._checked_at: dict[str, float] = {}

    def analysis(self, uri: str) -> Analysis:
        """The analysis of the document's current text (computed once per version)."""
        document = self.workspace.get_text_document(uri)
        cached = self._analyses.get(uri)
        if cached is not None and cached[0] == document.version and document.version is not None:
            return cached[1]
        start = time.perf_counter()
        units = unit_counter(self.workspace.position_encoding)
        result = analyze(document.source, document.path or uri, self.sizes, units)
        self._checked_at[uri] = time.perf_counter()
        self._check_seconds[uri] = self._checked_at[uri] - start
        self._analyses[uri] = (document.version, result)
        return result

    def publish(self, uri: str) -> None:
        document = self.workspace.get_text_document(uri)
        diagnostics = self.analysis(uri).lsp_diagnostics(uri)
        self.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=uri, version=document.version, diagnostics=diagnostics)
        )

    async def publish_after_quiet(self, uri: str, version: Optional[int]) -> None:
        check_seconds = self._check_seconds.get(uri, 0.0)
        catching_up = time.perf_counter() - self._checked_at.get(uri, float("-inf")) < check_seconds
        await asyncio.sleep(min(MAX_DEBOUNCE_S, check_seconds) if catching_up else 0)
        if uri not in self.workspace.text_documents:
            return  # closed meanwhile
        if self.workspace.get_text_document(uri).version != version:
            return  # a newer change has its own task
        self.publish(uri)

    def forget(self, uri: str) -> None:
        self._analyses.pop(uri, None)
        self._check_seconds.pop(uri, None)
        self._checked_at.pop(uri, None)


def build_server(sizes: Optional[dict] = None) -> SpaceServer:
    server = SpaceServer(sizes)

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: SpaceServer, params: types.DidOpenTextDocumentParams) -> None:
        ls.publish(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    async def did_change(ls: SpaceServer, params: types.DidChangeTextDocumentParams) -> None:
        await ls.publish_after_quiet(params.text_document.uri, params.text_document.version)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: SpaceServer, params: types.DidSaveTextDocumentParams) -> None:
        ls.publish(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: SpaceServer, params: types.DidCloseTextDocumentParams) -> None:
        uri = params.text_document.uri
        ls.forget(uri)
        ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=[]))

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    def hover(ls: SpaceServer, params: types.HoverParams) -> Optional[types.Hover]:
        return features.hover(ls.analysis(params.text_document.uri), params.position)

    @server.feature(types.TEXT_DOCUMENT_DEFINITION)
    def definition(ls: SpaceServer, params: types.DefinitionParams):
        uri = params.text_document.uri
        return features.definition(ls.analysis(uri), uri, params.position)

    @server.feature(types.TEXT_DOCUMENT_REFERENCES)
    def references(ls: SpaceServer, params: types.ReferenceParams):
        uri = params.text_document.uri
        return features.references(ls.analysis(uri), uri, params.position, params.context.include_declaration)

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=["{", ","]))
    def completion(ls: SpaceServer, params: types.CompletionParams) -> types.CompletionList:
        return features.completion(ls.analysis(params.text_document.uri), params.position)

    @server.feature(types.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
    def document_symbol(ls: SpaceServer, params: types.DocumentSymbolParams):
        return features.document_symbols(ls.analysis(params.text_document.uri))

    @server.feature(types.TEXT_DOCUMENT_FORMATTING)
    def formatting(ls: SpaceServer, params: types.DocumentFormattingParams):
        uri = params.text_document.uri
        return features.formatting(ls.analysis(uri), ls.workspace.get_text_document(uri).source)

    return server


def serve(sizes: Optional[dict] = None) -> None:
    """Run the server on stdin/stdout until the client says exit."""
    build_server(sizes).start_io()
