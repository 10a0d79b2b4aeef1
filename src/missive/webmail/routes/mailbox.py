"""The mailbox (SPEC §5): folder lists, message view, attachments, links, move, search.

URLs name a folder by a fixed French slug and a message by its UID *in the viewer's mailbox*
(``/boite/reception/42``). They carry no subject, name or address, and mean nothing in another
mailbox: every route opens only the viewer's mailbox, so a UID or part number that is not there
gives 404 (no IDOR by changing an identifier). Every read, download and move is audited on the
mailbox with the viewer as actor (the patient's access journal shows a caregiver's accesses).

Sender display (as Mon Espace Santé): the professional's name and profession from the directory,
not their address; an unknown sender shows the display name of the message.
"""

from __future__ import annotations

import email.utils
import functools
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from missive.audit import log as audit
from missive.directory.professionals import professional_by_address
from missive.errors import NotFound
from missive.mailbox.store import FolderStatus, MailboxSession, MessageInfo
from missive.mime.parts import get_part_payload, list_parts
from missive.mime.summary import MessageSummary
from missive.policy import closes_conversation
from missive.webmail import outgoing, render
from missive.webmail.app import page
from missive.webmail.deps import Viewer, ViewerDep, Web, WebDep, opened_mailbox

router = APIRouter()

#: URL slug -> (store folder name, French title).
FOLDERS: dict[str, tuple[str, str]] = {
    "reception": ("INBOX", "Boîte de réception"),
    "archives": ("Archive", "Archives"),
    "envoyes": ("Sent", "Messages envoyés"),
    "corbeille": ("Trash", "Corbeille"),
}
#: Dates are shown in French legal time (the patients of a French operator).
DISPLAY_ZONE = ZoneInfo("Europe/Paris")
#: How long a sender's directory label is reused without asking the directory again.
SENDER_CACHE_SECONDS = 60.0
MONTHS = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre",
          "octobre", "novembre", "décembre")


def folder_of(slug: str) -> str:
    try:
        return FOLDERS[slug][0]
    except KeyError:
        raise NotFound("no such folder") from None


def french_date(value: str | datetime) -> str:
    dt: datetime | None
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = email.utils.parsedate_to_datetime(value) if value else None
        except (TypeError, ValueError, IndexError):
            dt = None
    if dt is None:
        return "date inconnue"
    if dt.tzinfo is not None:
        dt = dt.astimezone(DISPLAY_ZONE)
    return f"{dt.day} {MONTHS[dt.month - 1]} {dt.year} à {dt.hour:02d} h {dt.minute:02d}"


@dataclass
class Row:
    uid: int
    unread: bool
    sender: str
    profession: str
    subject: str
    date: str
    has_attachments: bool


async def sender_labels(web: Web, summaries: list[MessageSummary]) -> dict[str, tuple[str, str]]:
    """(name, profession) of the senders, by lower-case address, from the directory in one
    read, through a small per-process cache (directory names change rarely)."""
    cache: dict[str, tuple[float, tuple[str, str] | None]] = web.caches.setdefault("senders", {})
    now = time.monotonic()
    out: dict[str, tuple[str, str]] = {}
    missing: set[str] = set()
    for summary in summaries:
        addr = summary.from_addr.lower()
        if not addr:
            continue
        hit = cache.get(addr)
        if hit is not None and now - hit[0] < SENDER_CACHE_SECONDS:
            if hit[1] is not None:
                out[addr] = hit[1]
        else:
            missing.add(addr)
    if missing:
        async with web.core.db.read() as s:
            for addr in missing:
                pro = await professional_by_address(s, addr)
                label = (pro.name, pro.specialty or pro.profession) if pro is not None else None
                cache[addr] = (now, label)
                if label is not None:
                    out[addr] = label
        if len(cache) > 10_000:
            cache.clear()
    return out


async def sender_label(web: Web, summary: MessageSummary) -> tuple[str, str]:
    """(name, profession) of a message's sender: the directory's, else the display name."""
    found = (await sender_labels(web, [summary])).get(summary.from_addr.lower())
    return found or (summary.from_name or "Expéditeur inconnu", "")


async def rows_for(web: Web, box: MailboxSession, name: str, infos: list[MessageInfo],
                   summaries: dict[int, MessageSummary] | None = None) -> list[Row]:
    if summaries is None:
        summaries = await box.summaries(name, [m.uid for m in infos]) if infos else {}
    labels = await sender_labels(web, list(summaries.values()))
    out: list[Row] = []
    for m in infos:
        summary = summaries.get(m.uid) or MessageSummary()
        if name == "Sent":
            who, what = "À : " + ", ".join(summary.to[:3]), ""
        else:
            who, what = labels.get(summary.from_addr.lower()) or (
                summary.from_name or "Expéditeur inconnu", "")
        out.append(Row(m.uid, "\\Seen" not in m.flags, who, what,
                       summary.subject or "(sans objet)",
                       french_date(summary.date or m.internal_date), summary.has_attachments))
    return out


def base_context(who: Viewer, slug: str | None = None) -> dict[str, Any]:
    return {"viewer": who, "folders": FOLDERS, "current": slug}


async def folder_status(web: Web, box: MailboxSession, name: str,
                        modseq: int | None = None) -> FolderStatus:
    """The folder's counts, recomputed only when the mailbox changed.

    Every change to a mailbox takes a new ``highest_modseq`` (RFC 7162 §3.1, kept by the store
    for IMAP CONDSTORE), so counts cached with the modseq they were computed at stay exact; a
    page view then costs one primary-key read instead of counting the whole folder.
    """
    cache: dict[str, tuple[int, FolderStatus]] = web.caches.setdefault("status", {})
    key = f"{box.mailbox_id}/{name}"
    hit = cache.get(key)
    if hit is not None and hit[0] == (modseq if modseq is not None
                                      else await box.highest_modseq()):
        return hit[1]
    status = await box.status(name)
    if len(cache) > 10_000:
        cache.clear()
    cache[key] = (status.highest_modseq, status)
    return status


def _uid_param(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and len(value) < 11 else None


@router.get("/boite/{slug}")
async def folder_list(request: Request, web: WebDep, who: ViewerDep, slug: str) -> Response:
    """Newest first, by pages of ``webmail.page_size``: keyset pagination on UIDs
    (``?avant=<uid>`` older, ``?apres=<uid>`` newer) so that a page costs the same in a folder
    of 100 or 100,000 messages."""
    name = folder_of(slug)
    if who.mailbox_id is None:
        return page(request, "no_mailbox.html", base_context(who, slug))
    box = await opened_mailbox(web, who)
    # The rendered page is reused while nothing changed (see webmail.keys): keyed by what it
    # shows besides the mailbox's messages.
    key = repr((str(request.url.path), str(request.url.query), who.session.csrf_token,
                who.display_name, who.choices))
    cached = web.vault.page(who.session.id, box.mailbox_id, key, await box.highest_modseq())
    if cached is not None:
        return HTMLResponse(cached)
    before = _uid_param(request.query_params.get("avant"))
    after = _uid_param(request.query_params.get("apres"))
    got = await box.page(name, limit=web.settings.webmail.page_size, below=before,
                         above=after if before is None else None)
    status = await folder_status(web, box, name, got.highest_modseq)
    chunk = got.messages
    response = page(request, "folder.html", {
        **base_context(who, slug), "title": FOLDERS[slug][1],
        "rows": await rows_for(web, box, name, chunk, got.summaries),
        "total": status.messages, "unread": status.unseen,
        "older": chunk[-1].uid if got.older and chunk else None,
        "newer": chunk[0].uid if got.newer and chunk else None})
    web.vault.keep_page(who.session.id, box.mailbox_id, key, got.highest_modseq,
                        bytes(response.body))
    return response


async def _message(box: MailboxSession, name: str, uid: int) -> tuple[MessageInfo, bytes]:
    info, raw, _summary = await box.read_message(name, uid)  # NotFound when not there
    return info, raw


@router.get("/boite/{slug}/{uid}")
async def message_view(request: Request, web: WebDep, who: ViewerDep, slug: str,
                       uid: int) -> Response:
    name = folder_of(slug)
    box = await opened_mailbox(web, who)
    info, raw, summary = await box.read_message(name, uid)
    shown = render.render(raw, f"/boite/{slug}/{uid}/lien")
    first_read = "\\Seen" not in info.flags
    if first_read and who.is_owner:
        await box.store_flags(name, [uid], {"\\Seen"}, "add")
        if summary.disposition_notification_to and who.patient is not None \
                and who.patient.read_receipts:
            await _send_mdn(web, who, summary)
    await web.core.store.writer.run(functools.partial(audit.append_many_sync, entries=[
        audit.Entry("web.message.read", who.actor, who.mailbox_id,
                    details={"folder": name, "uid": uid})]))
    sender, profession = await sender_label(web, summary)
    closed = closes_conversation(summary.subject, summary.mss.get("X-MSS-MES"))
    if not closed and summary.thread_root:
        closed = await web.core.store.conversation_closed(summary.thread_root)
    return page(request, "message.html", {
        **base_context(who, slug), "uid": uid, "summary": summary, "sender": sender,
        "profession": profession, "date": french_date(summary.date or info.internal_date),
        "shown": shown, "replies_closed": closed, "folder_name": name,
        "no_moves": None if who.is_owner else caregiver_no_moves(who),
        "title": summary.subject or "(sans objet)"})


async def _send_mdn(web: Web, who: Viewer, summary: MessageSummary) -> None:
    """RFC 8098 ``displayed`` receipt, when the patient allows it (see ``outgoing``)."""
    assert who.patient is not None  # noqa: S101 - checked by the caller
    built = outgoing.build_mdn(web.core, who.patient, summary)
    if built is None:
        return
    try:
        async with web.core.db.read() as s:
            target = await outgoing.reply_target(web.core, s, who.patient, summary)
    except outgoing.ReplyRefused:
        # Not a professional the patient may write to (closed conversation is no reason to
        # withhold a receipt, but an unknown or outside address is).
        return
    await outgoing.send(web.core, outgoing.patient_address(web.core, who.patient), target,
                        built[1], who.actor)
    async with web.core.db.write() as s:
        await audit.append(s, "web.mdn.sent", actor=who.actor, mailbox_id=who.mailbox_id)


@router.get("/boite/{slug}/{uid}/lien/{n}")
async def link_warning(request: Request, web: WebDep, who: ViewerDep, slug: str, uid: int,
                       n: int) -> Response:
    name = folder_of(slug)
    box = await opened_mailbox(web, who)
    _info, raw = await _message(box, name, uid)
    target = render.link_target(raw, n)
    if target is None:
        raise NotFound("no such link")
    return page(request, "link.html", {**base_context(who, slug), "target": target,
                                       "back": f"/boite/{slug}/{uid}",
                                       "title": "Vous allez quitter la messagerie"})


async def _part(web: Web, who: Viewer, slug: str, uid: int,
                index: str) -> tuple[render.Attachment, bytes]:
    name = folder_of(slug)
    box = await opened_mailbox(web, who)
    _info, raw = await _message(box, name, uid)
    found = next((a for a in render.attachments(raw, list_parts(raw)) if a.index == index), None)
    payload = get_part_payload(raw, index) if found is not None else None
    if found is None or payload is None:
        raise NotFound("no such attachment")
    async with web.core.db.write() as s:
        await audit.append(s, "web.attachment.download", actor=who.actor,
                           mailbox_id=who.mailbox_id,
                           details={"folder": name, "uid": uid, "part": index})
    return found, payload


#: Types served as themselves when downloaded; anything else is application/octet-stream.
SAFE_TYPES = {"application/pdf", "image/png", "image/jpeg", "image/gif", "image/tiff",
              "text/plain", "application/zip", "application/xml", "text/xml",
              "application/dicom", "application/hl7-v2"}


@router.get("/boite/{slug}/{uid}/piece/{index}")
async def download(web: WebDep, who: ViewerDep, slug: str, uid: int, index: str) -> Response:
    att, payload = await _part(web, who, slug, uid, index)
    ctype = "application/pdf" if att.is_pdf else (
        att.content_type if att.content_type in SAFE_TYPES else "application/octet-stream")
    if ctype.startswith("text/"):
        ctype += "; charset=utf-8"
    return Response(payload, media_type=ctype, headers={
        "Content-Disposition": render.content_disposition("attachment", att.filename),
        "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; sandbox"})


@router.get("/boite/{slug}/{uid}/piece/{index}/voir")
async def view_pdf(web: WebDep, who: ViewerDep, slug: str, uid: int, index: str) -> Response:
    att, payload = await _part(web, who, slug, uid, index)
    if not att.is_pdf:
        raise NotFound("only PDF documents are shown in the browser")
    # The browser's own PDF viewer renders the document in a synthetic page with an <embed>,
    # which any object-src/default-src restriction would block (Chromium): only framing is
    # forbidden here. PDF scripts run, if at all, in the browser's sandboxed viewer.
    return Response(payload, media_type="application/pdf", headers={
        "Content-Disposition": render.content_disposition("inline", att.filename),
        "Content-Security-Policy": "frame-ancestors 'none'"})


# --- moving messages --------------------------------------------------------------------------

MOVES: dict[str, tuple[str, str]] = {
    # action -> (destination folder, audit action)
    "archiver": ("Archive", "web.message.archive"),
    "supprimer": ("Trash", "web.message.trash"),
    "restaurer": ("INBOX", "web.message.restore"),
}


#: Why a caregiver cannot archive, trash or restore (shown on the message and if they try).
CAREGIVER_NO_MOVES = ("Votre accès permet de lire ces messages{reply}. Les ranger dans les "
                      "archives, les mettre à la corbeille ou les restaurer reste réservé à "
                      "{name}.")


def caregiver_no_moves(who: Viewer) -> str:
    name = next((c.label for c in who.choices if c.active),
                "la personne titulaire de la messagerie")
    return CAREGIVER_NO_MOVES.format(reply=" et d'y répondre" if who.can_reply else "",
                                     name=name)


@router.post("/boite/{slug}/{uid}/{action}")
async def move(request: Request, web: WebDep, who: ViewerDep, slug: str, uid: int,
               action: str) -> Response:
    name = folder_of(slug)
    if action not in MOVES:
        raise NotFound("no such action")
    if not who.is_owner:
        # Caregivers read (and may reply, SPEC §5 "read, or read and reply"); sorting and
        # deleting the patient's mail stays with the patient: a message a caregiver put in the
        # trash could go unseen by the patient. Refused in words, not by a missing button.
        async with web.core.db.write() as s:
            await audit.append(s, MOVES[action][1], actor=who.actor, mailbox_id=who.mailbox_id,
                               outcome="refused", reason="caregiver",
                               details={"folder": name, "uid": uid})
        return page(request, "error.html", {
            **base_context(who, slug), "title": "Action réservée au titulaire",
            "text": caregiver_no_moves(who), "back": f"/boite/{slug}/{uid}",
            "back_label": "Revenir au message"}, status_code=403)
    dest, audit_action = MOVES[action]
    if dest == name:
        return RedirectResponse(f"/boite/{slug}", status_code=303)
    box = await opened_mailbox(web, who)
    if not await box.messages(name, [uid]):
        raise NotFound("no such message")
    await box.move(name, [uid], dest)
    async with web.core.db.write() as s:
        await audit.append(s, audit_action, actor=who.actor, mailbox_id=who.mailbox_id,
                           details={"from": name, "uid": uid, "to": dest})
    return RedirectResponse(f"/boite/{slug}?fait={action}", status_code=303)


# --- search -----------------------------------------------------------------------------------

@router.get("/recherche")
async def search_form(request: Request, who: ViewerDep) -> Response:
    return page(request, "search.html", {**base_context(who, "recherche"), "query": "",
                                         "results": None, "errors": {}})


@router.post("/recherche")
async def search(request: Request, web: WebDep, who: ViewerDep,
                 q: Annotated[str, Form()] = "") -> Response:
    """POST so that the words searched (often health words) stay out of URLs and logs."""
    query = q.strip()
    ctx: dict[str, Any] = {**base_context(who, "recherche"), "query": query, "results": None,
                           "errors": {}}
    if len(query) < 2:
        ctx["errors"]["q"] = "Tapez au moins deux lettres."
        return page(request, "search.html", ctx, status_code=400)
    box = await opened_mailbox(web, who)
    results: list[tuple[str, str, Row]] = []
    for slug, (name, title) in FOLDERS.items():
        uids = await box.search_text(name, query[:200])
        infos = await box.messages(name, uids[-100:]) if uids else []
        infos.reverse()
        for row in await rows_for(web, box, name, infos):
            results.append((slug, title, row))
    async with web.core.db.write() as s:
        await audit.append(s, "web.search", actor=who.actor, mailbox_id=who.mailbox_id,
                           details={"results": len(results)})
    ctx["results"] = results
    return page(request, "search.html", ctx)
