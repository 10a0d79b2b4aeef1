"""P4, P5, P6, P7 (recipients): accepted and refused cases with exact codes."""

from __future__ import annotations

import pytest

from missive.errors import PolicyRefusal
from missive.identity import InsError, parse_matricule
from missive.policy import (
    PatientReplyFacts,
    Port,
    RecipientDecision,
    RecipientFacts,
    RecipientKind,
    SenderKind,
    check_patient_reply,
    check_recipient,
    classify_address,
    closes_conversation,
)

K = RecipientKind


def _ins_error(text: str) -> InsError:
    try:
        parse_matricule(text)
    except InsError as exc:
        return exc
    raise AssertionError(f"{text} parsed")


ACCEPTED = [
    (RecipientFacts(K.LOCAL_PROFESSIONAL), RecipientDecision()),
    (RecipientFacts(K.TRUST_SPACE), RecipientDecision(relay=True)),
    (RecipientFacts(K.LOCAL_PATIENT, patient_status="active"), RecipientDecision()),
    (
        RecipientFacts(K.LOCAL_PATIENT, patient_status="pending"),
        RecipientDecision(hold_until_activation=True),
    ),
    (RecipientFacts(K.LOCAL_PROFESSIONAL, port=Port.MX, sender_kind=SenderKind.OPERATOR),
     RecipientDecision()),
    (RecipientFacts(K.LOCAL_PATIENT, port=Port.MX, patient_status="active"),
     RecipientDecision()),
    # A patient replying to a remote professional: allowed here, P6 decides on the reply.
    (RecipientFacts(K.TRUST_SPACE, port=Port.LOCAL, sender_kind=SenderKind.PATIENT),
     RecipientDecision(relay=True)),
    (RecipientFacts(K.LOCAL_PROFESSIONAL, port=Port.LOCAL, sender_kind=SenderKind.PATIENT),
     RecipientDecision()),
]  # fmt: skip


@pytest.mark.parametrize(("facts", "decision"), ACCEPTED)
def test_accepted(facts: RecipientFacts, decision: RecipientDecision) -> None:
    assert check_recipient(facts) == decision


REFUSED = [
    (RecipientFacts(K.OUTSIDE), 550, "5.7.1", "P4", "Relay denied"),
    (RecipientFacts(K.OUTSIDE, sender_kind=SenderKind.PATIENT, port=Port.LOCAL), 550, "5.7.1",
     "P4", "Relay denied"),
    (RecipientFacts(K.LOCAL_PROFESSIONAL, mailbox_exists=False), 550, "5.1.1", "P4",
     "No such mailbox"),
    (RecipientFacts(K.LOCAL_PATIENT, ins_error=_ins_error("279035121518988")), 550, "5.1.1",
     "P5", "wrong key"),
    (RecipientFacts(K.LOCAL_PATIENT, ins_error=_ins_error("27903512151898")), 550, "5.1.1",
     "P5", "malformed"),
    (RecipientFacts(K.LOCAL_PATIENT, ins_error=_ins_error("253072C07300443")), 550, "5.1.1",
     "P5", "malformed"),
    (RecipientFacts(K.LOCAL_PATIENT, patient_status=None), 550, "5.1.1", "P5", "unknown patient"),
    (RecipientFacts(K.LOCAL_PATIENT, patient_status="opposed"), 550, "5.2.1", "P5",
     "not accepting"),
    (RecipientFacts(K.LOCAL_PATIENT, patient_status="closed"), 550, "5.2.1", "P5",
     "not accepting"),
    (RecipientFacts(K.LOCAL_PATIENT, patient_status="??"), 451, "4.3.0", "P5", "Temporary"),
    (RecipientFacts(K.LOCAL_PATIENT, sender_kind=SenderKind.PATIENT, port=Port.LOCAL,
                    patient_status="active"), 550, "5.7.1", "P6", "other patients"),
    (RecipientFacts(K.TRUST_SPACE, port=Port.MX, sender_kind=SenderKind.OPERATOR), 550, "5.7.1",
     "P7", "Relay denied"),
    (RecipientFacts(K.OUTSIDE, port=Port.MX, sender_kind=SenderKind.OPERATOR), 550, "5.7.1",
     "P7", "Relay denied"),
]  # fmt: skip


@pytest.mark.parametrize(("facts", "code", "enhanced", "rule", "text"), REFUSED)
def test_refused(facts: RecipientFacts, code: int, enhanced: str, rule: str, text: str) -> None:
    with pytest.raises(PolicyRefusal) as info:
        check_recipient(facts)
    err = info.value
    assert (err.code, err.enhanced, err.rule) == (code, enhanced, rule)
    assert text in err.public_text


def test_public_texts_never_echo_ins() -> None:
    for text in ("279035121518988", "27903512151898", "253072C07300443"):
        with pytest.raises(PolicyRefusal) as info:
            check_recipient(RecipientFacts(K.LOCAL_PATIENT, ins_error=_ins_error(text)))
        assert "2790" not in info.value.public_text and "2530" not in info.value.public_text
        assert "88" not in info.value.public_text and "89" not in info.value.public_text
        assert "2790" not in info.value.cause


def test_opposed_and_closed_are_indistinguishable_publicly() -> None:
    texts = set()
    for status in ("opposed", "closed"):
        with pytest.raises(PolicyRefusal) as info:
            check_recipient(RecipientFacts(K.LOCAL_PATIENT, patient_status=status))
        texts.add((info.value.code, info.value.enhanced, info.value.public_text))
    assert len(texts) == 1


# --- P6 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "facts",
    [
        PatientReplyFacts(references_known_message=True),
        PatientReplyFacts(professional_in_care_team=True),
        PatientReplyFacts(references_known_message=True, professional_in_care_team=True),
    ],
)
def test_p6_allowed(facts: PatientReplyFacts) -> None:
    check_patient_reply(facts)


@pytest.mark.parametrize(
    ("facts", "text"),
    [
        (PatientReplyFacts(), "only reply to a professional who wrote"),
        (PatientReplyFacts(recipient_is_patient=True, references_known_message=True),
         "other patients"),
        (PatientReplyFacts(references_known_message=True, conversation_closed=True),
         "closed replies"),
        (PatientReplyFacts(professional_in_care_team=True, conversation_closed=True),
         "closed replies"),
    ],
)  # fmt: skip
def test_p6_refused(facts: PatientReplyFacts, text: str) -> None:
    with pytest.raises(PolicyRefusal) as info:
        check_patient_reply(facts)
    err = info.value
    assert (err.code, err.enhanced, err.rule) == (550, "5.7.1", "P6")
    assert text in err.public_text


@pytest.mark.parametrize(
    ("subject", "mes", "closes"),
    [
        ("[FIN]", None, True),
        ("  [FIN] ", None, True),
        ("[fin]", None, True),
        (None, "FIN", True),
        ("Résultats", " fin ", True),
        ("Re: [FIN]", None, False),
        ("[FIN] merci", None, False),
        ("FIN", None, False),
        ("[ FIN ]", None, False),
        (None, None, False),
        ("Résultats", "SUITE", False),
        ("", "", False),
    ],
)
def test_closes_conversation(subject: str | None, mes: str | None, closes: bool) -> None:
    assert closes_conversation(subject, mes) is closes


# --- classify_address ----------------------------------------------------------------------------

DOMAINS = {
    "local_domains": ["example.org", "Hôpital.example"],
    "patient_domain": "patient.example.org",
    "trust_domains": ["other-operator.example"],
}


@pytest.mark.parametrize(
    ("addr", "kind"),
    [
        ("marie.curie@Example.ORG", K.LOCAL_PROFESSIONAL),
        ("urgences@xn--hpital-ixa.example", K.LOCAL_PROFESSIONAL),
        ("urgences@HÔPITAL.example", K.LOCAL_PROFESSIONAL),
        ("dr@other-operator.example", K.TRUST_SPACE),
        ("dr@sub.other-operator.example", K.OUTSIDE),
        ("someone@gmail.example", K.OUTSIDE),
        ("279035121518989@patient.example.org", K.LOCAL_PATIENT),
    ],
)
def test_classify(addr: str, kind: RecipientKind) -> None:
    assert classify_address(addr, **DOMAINS).kind is kind  # type: ignore[arg-type]


def test_classify_patient() -> None:
    good = classify_address("253072a07300443@Patient.example.org", **DOMAINS)  # type: ignore[arg-type]
    assert good.matricule == parse_matricule("253072A07300443")
    assert good.address == "253072a07300443@patient.example.org"
    bad = classify_address("279035121518988@patient.example.org", **DOMAINS)  # type: ignore[arg-type]
    assert bad.kind is K.LOCAL_PATIENT and bad.matricule is None
    assert bad.ins_error is not None and bad.ins_error.reason == "key"
    with pytest.raises(PolicyRefusal) as info:
        check_recipient(RecipientFacts(bad.kind, ins_error=bad.ins_error))
    assert (info.value.code, info.value.enhanced) == (550, "5.1.1")


@pytest.mark.parametrize("addr", ["no-at", "a..b@example.org", "@example.org", "x@[127.0.0.1]"])
def test_classify_bad_syntax(addr: str) -> None:
    with pytest.raises(PolicyRefusal) as info:
        classify_address(addr, **DOMAINS)  # type: ignore[arg-type]
    assert (info.value.code, info.value.enhanced) == (501, "5.1.3")
