"""What people read for the log's words, in English and Japanese: PIN types
(the README's table: 住民基本台帳用 ...), event types, outcomes and channels.
One place for them: the auditors' console shows these, and a test holds the
README's PIN table to them (tests/unit/test_labels.py).

Every PIN type, event type, outcome and role has a label (checked on import,
as audit.py checks its outcomes); a name this release does not know (an
event type a newer writer stored) is shown as it is."""

from __future__ import annotations

from typing import Literal

from .access import Role
from .audit import Outcome
from .events import EVENT_TYPES
from .pins import PinType

Lang = Literal["en", "ja"]
LANGS: tuple[Lang, ...] = ("en", "ja")

PIN_TYPES: dict[PinType, tuple[str, str]] = {  # (English, Japanese)
    PinType.RESIDENT_REGISTRY: ("resident registry", "住民基本台帳用"),
    PinType.CARD_INFO_INPUT_SUPPORT: ("card-info input support", "券面事項入力補助用"),
    PinType.USER_CERTIFICATE: ("user certificate", "利用者証明用電子証明書"),
    PinType.SIGNATURE: ("signature certificate", "署名用電子証明書"),
}

EVENTS: dict[str, tuple[str, str]] = {
    "CardEnrolled": ("card enrolled", "カード登録"),
    "PinVerified": ("PIN verified", "暗証番号照合成功"),
    "PinVerificationFailed": ("wrong PIN", "暗証番号誤り"),
    "PinLocked": ("PIN locked", "暗証番号ロック"),
    "LockedPinAttempted": ("attempt on a locked PIN", "ロック中の照合試行"),
    "PinChanged": ("PIN changed", "暗証番号変更"),
    "PinReset": ("PIN reset", "暗証番号初期化"),
    "PinUnlocked": ("PIN unlocked", "ロック解除"),
    "CounterProcedureRefused": ("counter procedure refused", "窓口手続き拒否"),
    "CardSuspended": ("card suspended", "カード一時停止"),
    "CardResumed": ("card resumed", "一時停止解除"),
    "SuspendedCardAttempted": ("attempt on a suspended card", "停止中カードの利用試行"),
    "ProxyInquiryIssued": ("proxy inquiry issued", "照会書発行（代理人）"),
    "ProxyInquiryClosed": ("proxy inquiry closed", "照会書終了"),
    "ProxyInquiryCodeRejected": ("wrong inquiry code", "照会番号誤り"),
    "StoreResetReserved": ("store reset reserved", "コンビニ初期化予約"),
    "ResetRefused": ("reset refused", "初期化拒否"),
    "AccessDenied": ("access denied", "アクセス拒否"),
    "CounterOutOfService": ("counter out of hours or wards", "窓口時間・管轄外"),
    "TerminalThrottled": ("terminal throttled", "端末制限"),
    "SuspensionRefused": ("suspension refused", "一時停止拒否"),
    "AuditRead": ("audit read", "監査閲覧"),
    "RepeatsCounted": ("repeats counted", "繰り返し集計"),
}

OUTCOMES: dict[Outcome, tuple[str, str]] = {
    Outcome.SUCCESS: ("success", "成功"),
    Outcome.FAILURE: ("failure", "失敗"),
    Outcome.LOCKED: ("locked", "ロック"),
    Outcome.REFUSED: ("refused", "拒否"),
    Outcome.OTHER: ("other", "その他"),
}

CHANNELS: dict[Role, tuple[str, str]] = {
    Role.MEDICAL_READER: ("medical-institution reader", "医療機関の読取端末"),
    Role.CONVENIENCE_STORE: ("convenience-store kiosk", "コンビニ端末"),
    Role.SMARTPHONE_APP: ("PIN-reset app", "初期化アプリ"),
    Role.SELF_SERVICE: ("self service", "本人操作"),
    Role.WARD_OFFICE: ("ward office", "区役所"),
    Role.SPECIAL_CENTER: ("Special Center", "特設センター"),
    Role.AUDITOR: ("auditor", "監査"),
    Role.CALL_CENTER: ("call centre", "コールセンター"),
    Role.DEVELOPMENT: ("development", "開発"),
}

assert PIN_TYPES.keys() == set(PinType), "every PIN type has a label"
assert EVENTS.keys() == EVENT_TYPES.keys(), "every event type has a label"
assert OUTCOMES.keys() == set(Outcome), "every outcome has a label"
assert CHANNELS.keys() == set(Role), "every channel has a label"

_PIN_BY_VALUE = {t.value: v for t, v in PIN_TYPES.items()}
_OUTCOME_BY_VALUE = {o.value: v for o, v in OUTCOMES.items()}
_CHANNEL_BY_VALUE = {r.value: v for r, v in CHANNELS.items()}


def _pick(pair: tuple[str, str] | None, name: str, lang: Lang) -> str:
    return name if pair is None else pair[LANGS.index(lang)]


def pin_type(name: str, lang: Lang = "en") -> str:
    """A PIN type by its value ("user_certificate"), as people read it."""
    return _pick(_PIN_BY_VALUE.get(name), name, lang)


def event_type(name: str, lang: Lang = "en") -> str:
    return _pick(EVENTS.get(name), name, lang)


def outcome(name: str, lang: Lang = "en") -> str:
    """An outcome by its value ("failure")."""
    return _pick(_OUTCOME_BY_VALUE.get(name), name, lang)


def channel(name: str, lang: Lang = "en") -> str:
    """A channel (the caller's role) by its value ("medical_reader")."""
    return _pick(_CHANNEL_BY_VALUE.get(name), name, lang)
