"""Writing and taking mail out: reply to a professional (P6), export of everything (SPEC §5).

The reply form is reached from a message; whether a reply is allowed is decided before the form
is shown (a clear explanation instead of a form when it is not) and again when it is sent. The
export is a ZIP built for the viewer's own mailbox only (there is no export identifier to
guess): every message as ``<dossier>/<uid>.eml`` plus its attachments under
``<dossier>/<uid>-pieces-jointes/``; it is offered to the patient, not to caregivers.

The ZIP is streamed as it is written (:func:`export_chunks`): messages are decrypted by batches
of :data:`EXPORT_BATCH`, compressed in a worker thread (the event loop keeps serving SMTP, IMAP
and other pages meanwhile) and sent, so a mailbox of 100,000 messages never sits in memory, and
no decrypted mail is ever written to a temporary file (C1). ``zipfile`` writes to a stream it
cannot seek with a data descriptor after each member (APPNOTE 4.3.9) and Zip64 records when
the archive needs them, which every unzip tool reads.
"""

from __future__ import annotations

import asyncio
import zipfile
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from missive.audit import log as audit
from missive.directory.models import Patient
from missive.errors import NotFound
from missive.mailbox.store import MailboxSession
from missive.mime.summary import MessageSummary
from missive.webmail import outgoing, render
from missive.webmail.app import page
from missive.webmail.deps import Viewer, ViewerDep, Web, WebDep, opened_mailbox
from missive.webmail.routes.mailbox import FOLDERS, base_context, folder_of

router = APIRouter()
MAX_REPLY = 20_000


async def _context(web: Web, who: Viewer, slug: str, uid: int) -> tuple[
        Patient, MessageSummary, outgoing.ReplyTarget | None, str | None]:
    name = folder_of(slug)
    if name == "Sent" or who.patient is None:
        raise NotFound("no reply from this folder")
    box = await opened_mailbox(web, who)
    summaries = await box.summaries(name, [uid])
    if uid not in summaries:
        raise NotFound("no such message")
    original = summaries[uid]
    if not who.can_reply:
        return who.patient, original, None, ("Votre accès est en lecture seule : vous ne pouvez "
                                              "pas répondre à ce message.")
    try:
        async with web.core.db.read() as s:
            target = await outgoing.reply_target(web.core, s, who.patient, original)
    except outgoing.ReplyRefused as exc:
        return who.patient, original, None, exc.text
    return who.patient, original, target, None


@router.get("/boite/{slug}/{uid}/repondre")
async def reply_form(request: Request, web: WebDep, who: ViewerDep, slug: str,
                     uid: int) -> Response:
    _patient, original, target, refusal = await _context(web, who, slug, uid)
    return page(request, "reply.html", {
        **base_context(who, slug), "uid": uid, "title": "Répondre",
        "subject": outgoing.reply_subject(original.subject), "refusal": refusal,
        "to_name": original.from_name, "text": "", "errors": {}},
        status_code=200 if target else 403)


@router.post("/boite/{slug}/{uid}/repondre")
async def reply(request: Request, web: WebDep, who: ViewerDep, slug: str, uid: int,
                text: Annotated[str, Form()] = "") -> Response:
    patient, original, target, refusal = await _context(web, who, slug, uid)
    ctx = {**base_context(who, slug), "uid": uid, "title": "Répondre",
           "subject": outgoing.reply_subject(original.subject), "refusal": refusal,
           "to_name": original.from_name, "text": text, "errors": {}}
    if target is None:
        return page(request, "reply.html", ctx, status_code=403)
    if not text.strip():
        ctx["errors"] = {"text": "Écrivez votre message avant de l'envoyer."}
        return page(request, "reply.html", ctx, status_code=400)
    if len(text) > MAX_REPLY:
        ctx["errors"] = {"text": f"Le message est trop long (au plus {MAX_REPLY} caractères)."}
        return page(request, "reply.html", ctx, status_code=400)
    raw = outgoing.build_reply(web.core, patient, original, target, text,
                               written_by=who.display_name if who.delegate else None)
    await outgoing.send(web.core, outgoing.patient_address(web.core, patient), target, raw,
                        who.actor)
    box = await opened_mailbox(web, who)
    _validity, sent_uid = await box.append("Sent", raw, {"\\Seen"})
    async with web.core.db.write() as s:
        await audit.append(s, "web.message.reply", actor=who.actor, mailbox_id=patient.mailbox_id,
                           details={"folder": folder_of(slug), "uid": uid, "sent_uid": sent_uid})
    return RedirectResponse(f"/boite/{slug}/{uid}?fait=envoye", status_code=303)


# --- export -----------------------------------------------------------------------------------

@router.get("/export")
async def export_form(request: Request, who: ViewerDep) -> Response:
    if not who.is_owner:
        raise NotFound("only the patient exports their mailbox")
    return page(request, "export.html", {**base_context(who, "parametres"),
                                         "title": "Télécharger tous mes messages"})


#: Messages decrypted, compressed and sent at a time: bounds the memory an export holds.
EXPORT_BATCH = 50


class _Pipe:
    """A write-only, unseekable sink for ``zipfile``: what was written since the last drain."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes, /) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def drain(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def _add_message(zf: zipfile.ZipFile, slug: str, uid: int, raw: bytes) -> None:
    zf.writestr(f"{slug}/{uid:06d}.eml", raw)
    seen: set[str] = set()
    for att in render.attachments(raw):
        payload = render.get_part_payload(raw, att.index)
        if payload is None:
            continue
        filename = att.filename
        if filename in seen:
            filename = f"{att.index}-{filename}"
        seen.add(filename)
        zf.writestr(f"{slug}/{uid:06d}-pieces-jointes/{filename}", payload)


def _add_batch(zf: zipfile.ZipFile, pipe: _Pipe, slug: str, got: dict[int, bytes]) -> bytes:
    for uid, raw in sorted(got.items()):
        _add_message(zf, slug, uid, raw)
    return pipe.drain()


def _finish(zf: zipfile.ZipFile, pipe: _Pipe) -> bytes:
    zf.close()  # the central directory
    return pipe.drain()


async def export_chunks(box: MailboxSession,
                        uids: dict[str, list[int]]) -> AsyncIterator[bytes]:
    """The ZIP of ``uids`` (folder slug -> UIDs), chunk by chunk, one batch at a time."""
    pipe = _Pipe()
    zf = zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_DEFLATED)
    for slug, wanted in uids.items():
        name = FOLDERS[slug][0]
        for start in range(0, len(wanted), EXPORT_BATCH):
            got = await box.fetch_many(name, wanted[start:start + EXPORT_BATCH])
            chunk = await asyncio.to_thread(_add_batch, zf, pipe, slug, got)
            if chunk:
                yield chunk
    yield await asyncio.to_thread(_finish, zf, pipe)


@router.post("/export")
async def export(web: WebDep, who: ViewerDep) -> Response:
    if not who.is_owner or who.patient is None:
        raise NotFound("only the patient exports their mailbox")
    box = await opened_mailbox(web, who)
    uids = {slug: [m.uid for m in await box.messages(name)]
            for slug, (name, _title) in FOLDERS.items()}
    async with web.core.db.write() as s:
        # Written when the download starts: the journal shows it even if it is interrupted.
        await audit.append(s, "web.export", actor=who.actor, mailbox_id=who.mailbox_id,
                           details={"messages": sum(len(u) for u in uids.values())})
    return StreamingResponse(export_chunks(box, uids), media_type="application/zip", headers={
        "Content-Disposition": render.content_disposition("attachment", "mes-messages.zip"),
        "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; sandbox"})
