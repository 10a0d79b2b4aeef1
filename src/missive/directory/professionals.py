"""Professionals: create, look up, authenticate, change status, delete (SPEC §1, P2, P3).

A professional is identified by a national identifier (``8`` + RPPS or ``0`` + ADELI) and owns
one mailbox address in the operator domain (plus optional aliases, all delivered to the same
mailbox and all accepted as senders by P2). Status ``active`` or ``suspended``: a suspended
professional never authenticates (P3), whatever the password, and keeps their mailbox.

Deleting a professional is allowed only once suspended; it crypto-shreds the mailbox (C3:
nothing of it can be read again) and frees the identifier and the address.

Implementation notes: :func:`authenticate_professional` takes the same time for an unknown
login, a suspended account and a wrong password (a dummy Argon2 verification), and rehashes a
matching password whose hash uses outdated parameters — the new hash is flushed in the
caller's session, so callers that want it kept call it inside ``db.write()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from missive.config import Settings
from missive.db.base import utcnow
from missive.directory import validate
from missive.directory.common import MailboxKeeper, audit
from missive.directory.errors import Conflict, InvalidField, NotFound
from missive.directory.models import PRO_STATUSES, Professional, ProfessionalAlias
from missive.directory.passwords import hash_password, verify_password
from missive.directory.validate import ProfessionalInput
from missive.identity.address import AddressError, normalize_address


def professional_view(p: Professional, aliases: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "id": p.id,
        "national_id": p.national_id,
        "rpps": p.rpps,
        "name": p.name,
        "profession": p.profession,
        "specialty": p.specialty,
        "address": p.address,
        "aliases": list(aliases),
        "mailbox_type": p.mailbox_type,
        "status": p.status,
        "mailbox_id": p.mailbox_id,
        "has_password": p.password_hash is not None,
        "created_at": p.created_at.isoformat(),
        "updated_at": p.updated_at.isoformat(),
    }


def _lookup_key(ref: str) -> tuple[str, str]:
    """``("address", normal form)``, ``("national_id", id)`` or ``("rpps", rpps)``; a bare
    9-digit ADELI number is looked up as its national id."""
    ref = ref.strip()
    if "@" in ref:
        try:
            return "address", normalize_address(ref)
        except AddressError as exc:
            raise InvalidField("address", f"{ref!r} is not a valid address: {exc}") from None
    if ref.isascii() and ref.isdigit():
        if len(ref) == 11:
            return "rpps", ref
        if len(ref) == 9:  # ADELI number: national id "0" + ADELI
            return "national_id", "0" + ref
        return "national_id", ref
    raise InvalidField("professional", f"give an address, an RPPS or a national id, got {ref!r}")


async def find_professional(session: AsyncSession, ref: str) -> Professional | None:
    """The professional designated by an address (or alias), an RPPS or a national id."""
    kind, key = _lookup_key(ref)
    if kind == "address":
        return await professional_by_address(session, key)
    column = Professional.rpps if kind == "rpps" else Professional.national_id
    result = await session.execute(select(Professional).where(column == key))
    return result.scalar_one_or_none()


async def professional_by_address(session: AsyncSession, address: str) -> Professional | None:
    """The owner of a normalised address: primary address first, then aliases."""
    result = await session.execute(select(Professional).where(Professional.address == address))
    found = result.scalar_one_or_none()
    if found is not None:
        return found
    result = await session.execute(
        select(Professional)
        .join(ProfessionalAlias, ProfessionalAlias.professional_id == Professional.id)
        .where(ProfessionalAlias.address == address)
    )
    return result.scalar_one_or_none()


async def get_professional(session: AsyncSession, ref: str) -> Professional:
    found = await find_professional(session, ref)
    if found is None:
        raise NotFound(f"no professional {ref.strip()}")
    return found


async def aliases_of(session: AsyncSession, professional_id: int) -> list[str]:
    result = await session.execute(
        select(ProfessionalAlias.address)
        .where(ProfessionalAlias.professional_id == professional_id)
        .order_by(ProfessionalAlias.address)
    )
    return list(result.scalars().all())


async def owned_addresses(session: AsyncSession, professional: Professional) -> frozenset[str]:
    """Every address (normal form) this professional may use as a sender (P2)."""
    return frozenset([professional.address, *await aliases_of(session, professional.id)])


async def _address_taken(session: AsyncSession, address: str) -> bool:
    return await professional_by_address(session, address) is not None


async def insert_professional(
    session: AsyncSession,
    store: MailboxKeeper,
    settings: Settings,
    data: ProfessionalInput,
    *,
    password: str | None,
    actor: str | None,
    password_hash: str | None = None,
) -> Professional:
    """Insert a checked record and create its mailbox in the same transaction."""
    existing = await session.execute(
        select(Professional.id).where(Professional.national_id == data.national_id)
    )
    if existing.scalar_one_or_none() is not None:
        raise Conflict(f"a professional with national id {data.national_id} already exists")
    if await _address_taken(session, data.address):
        raise Conflict(f"address {data.address} is already in use")
    if password is not None:
        password_hash = await hash_password(settings, password)
    mailbox_id = await store.create_mailbox(session, kind="professional")
    now = utcnow()
    pro = Professional(
        national_id=data.national_id,
        rpps=data.rpps,
        name=data.name,
        profession=data.profession,
        specialty=data.specialty,
        address=data.address,
        mailbox_type=data.mailbox_type,
        status=data.status,
        password_hash=password_hash,
        mailbox_id=mailbox_id,
        created_at=now,
        updated_at=now,
    )
    session.add(pro)
    await session.flush()
    await audit(
        session,
        "admin.pro.add",
        actor=actor,
        mailbox_id=mailbox_id,
        details={"professional_id": pro.id, "address": pro.address, "status": pro.status},
    )
    return pro


async def add_professional(
    session: AsyncSession,
    store: MailboxKeeper,
    settings: Settings,
    *,
    actor: str | None,
    password: str | None = None,
    **fields: Any,
) -> Professional:
    """Check the fields (see :func:`validate.professional_input`) and create the professional."""
    data = validate.professional_input(settings, **fields)
    return await insert_professional(session, store, settings, data, password=password,
                                     actor=actor)


async def list_professionals(
    session: AsyncSession,
    *,
    status: str | None = None,
    search: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> Sequence[Professional]:
    query = select(Professional).order_by(Professional.id)
    if status:
        query = query.where(
            Professional.status == validate.choice("status", status, PRO_STATUSES, "")
        )
    if search:
        pattern = f"%{search.strip().lower()}%"
        query = query.where(
            or_(
                Professional.address.like(pattern),
                Professional.name.ilike(pattern),
                Professional.national_id.like(pattern),
            )
        )
    if limit is not None:
        query = query.limit(limit)
    if offset:
        query = query.offset(offset)
    return (await session.execute(query)).scalars().all()


async def set_professional_status(
    session: AsyncSession, ref: str, status: str, *, actor: str | None
) -> Professional:
    new = validate.choice("status", status, PRO_STATUSES, "")
    pro = await get_professional(session, ref)
    old = pro.status
    if new == old:
        return pro
    pro.status = new
    pro.updated_at = utcnow()
    await session.flush()
    await audit(
        session,
        "admin.pro.set_status",
        actor=actor,
        mailbox_id=pro.mailbox_id,
        details={"professional_id": pro.id, "from": old, "to": new},
    )
    return pro


async def set_professional_password(
    session: AsyncSession, settings: Settings, ref: str, password: str, *, actor: str | None
) -> Professional:
    pro = await get_professional(session, ref)
    pro.password_hash = await hash_password(settings, password)
    pro.updated_at = utcnow()
    await session.flush()
    await audit(
        session,
        "admin.pro.passwd",
        actor=actor,
        mailbox_id=pro.mailbox_id,
        details={"professional_id": pro.id},
    )
    return pro


async def add_alias(
    session: AsyncSession, settings: Settings, ref: str, address: str, *, actor: str | None
) -> ProfessionalAlias:
    pro = await get_professional(session, ref)
    normal = validate.pro_address(address, settings)
    if await _address_taken(session, normal):
        raise Conflict(f"address {normal} is already in use")
    alias = ProfessionalAlias(professional_id=pro.id, address=normal, created_at=utcnow())
    session.add(alias)
    await session.flush()
    await audit(
        session,
        "admin.pro.alias_add",
        actor=actor,
        mailbox_id=pro.mailbox_id,
        details={"professional_id": pro.id, "alias": normal},
    )
    return alias


async def remove_alias(
    session: AsyncSession, address: str, *, actor: str | None
) -> None:
    try:
        normal = normalize_address(address.strip())
    except AddressError as exc:
        raise InvalidField("address", str(exc)) from None
    result = await session.execute(
        select(ProfessionalAlias).where(ProfessionalAlias.address == normal)
    )
    alias = result.scalar_one_or_none()
    if alias is None:
        raise NotFound(f"no alias {normal}")
    await audit(
        session,
        "admin.pro.alias_remove",
        actor=actor,
        details={"professional_id": alias.professional_id, "alias": normal},
    )
    await session.delete(alias)
    await session.flush()


async def delete_professional(
    session: AsyncSession, store: MailboxKeeper, ref: str, *, actor: str | None
) -> None:
    """Delete a suspended professional: crypto-shred the mailbox, then remove the row."""
    pro = await get_professional(session, ref)
    if pro.status != "suspended":
        raise Conflict(
            f"professional is {pro.status}: suspend the account first "
            "(`missive admin pro set-status ADDRESS suspended`), then delete it; "
            "deleting destroys the mailbox keys"
        )
    await store.close_mailbox(session, pro.mailbox_id)
    await audit(
        session,
        "admin.pro.delete",
        actor=actor,
        mailbox_id=pro.mailbox_id,
        details={"professional_id": pro.id, "address": pro.address},
    )
    await session.delete(pro)
    await session.flush()


async def authenticate_professional(
    session: AsyncSession, login: str, password: str, *, settings: Settings
) -> Professional | None:
    """The active professional whose address is ``login`` and password ``password``, or None.

    P3: a suspended professional never authenticates. Unknown logins cost the same Argon2
    verification as known ones. An outdated hash is replaced (flushed in ``session``).
    """
    try:
        address = normalize_address(login.strip())
    except AddressError:
        address = None
    pro = await professional_by_address(session, address) if address else None
    stored = pro.password_hash if pro is not None and pro.status == "active" else None
    check = await verify_password(settings, stored, password)
    if not check.ok or pro is None:
        return None
    if check.needs_rehash:
        pro.password_hash = await hash_password(settings, password)
        await session.flush()
    return pro
