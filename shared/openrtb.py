"""The one mapping from an OpenRTB 2.6 bid request (plus the won or candidate ad)
to the platform's raw feature fields.

The warehouse ingest and the bidder endpoint both call :func:`impression_fields`,
so an impression is described by the same raw values offline and online.
Missing optional objects (no ``device``, no ``geo``, no ``user.data``) give
``None`` fields; only structurally broken input raises :class:`MappingError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

from shared.errors import InputError


@dataclass(frozen=True)
class RawField:
    """A raw feature field the OpenRTB mapping produces: name, Spark type and where it comes from."""

    name: str
    dtype: str  # "string" | "long" | "double" | "array<string>"
    doc: str


RAW_FIELDS: tuple[RawField, ...] = (
    RawField("inventory_type", "string", "'site' or 'app': which of BidRequest.site / .app is present"),
    RawField("publisher_id", "string", "site.publisher.id or app.publisher.id"),
    RawField("site_id", "string", "site.id, or app.id for app inventory (the placement's owner)"),
    RawField("domain", "string", "site.domain, or app.bundle for apps"),
    RawField("tag_id", "string", "imp.tagid"),
    RawField("ad_format", "string", "'banner', 'video', 'native' or 'audio': which object the imp carries"),
    RawField("ad_size", "string", "WxH of imp.banner (w/h, else format[0]) or imp.video"),
    RawField("ad_pos", "long", "imp.banner.pos or imp.video.pos (OpenRTB AdPosition)"),
    RawField("bidfloor", "double", "imp.bidfloor"),
    RawField("device_type", "long", "device.devicetype (OpenRTB DeviceType)"),
    RawField("os", "string", "device.os"),
    RawField("make", "string", "device.make"),
    RawField("model", "string", "device.model"),
    RawField("connection_type", "long", "device.connectiontype (OpenRTB ConnectionType)"),
    RawField("country", "string", "device.geo.country (ISO-3166-1 alpha-3), else user.geo.country"),
    RawField("region", "string", "device.geo.region, else user.geo.region"),
    RawField("user_id", "string", "user.id, else user.buyeruid, else device.ifa"),
    RawField("user_segments", "array<string>", "user.data[].segment[].id (else data.id:value; a data entry without segments gives data.id)"),
    RawField("advertiser_id", "string", "the ad's advertiser id"),
    RawField("campaign_id", "string", "the ad's campaign id"),
    RawField("creative_id", "string", "the ad's creative id"),
    RawField("creative_type", "string", "the ad's creative type (banner, video, native, rich_media)"),
    RawField("hour_of_day", "long", "UTC hour of the event time, 0-23"),
    RawField("day_of_week", "long", "UTC weekday of the event time, 0 = Monday"),
)
RAW_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in RAW_FIELDS)
AD_KEYS = ("advertiser_id", "campaign_id", "creative_id", "creative_type")


class MappingError(InputError):
    """Input that cannot be mapped; ``reason`` is a short stable code for quarantine tables."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _obj(parent: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MappingError("wrong_type", f"{where}.{key} must be an object, got {type(value).__name__}")
    return value


def _str(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise MappingError("wrong_type", f"{where} must be a string, got {type(value).__name__}")
    return str(value)


def _int(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise MappingError("wrong_type", f"{where} must be an integer, got {type(value).__name__}")
    return value


def _float(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MappingError("wrong_type", f"{where} must be a number, got {type(value).__name__}")
    return float(value)


def _size(obj: Mapping[str, Any], where: str) -> str | None:
    w, h = _int(obj.get("w"), f"{where}.w"), _int(obj.get("h"), f"{where}.h")
    if (w is None or h is None) and isinstance(obj.get("format"), list) and obj["format"]:
        first = obj["format"][0]
        if isinstance(first, Mapping):
            w, h = _int(first.get("w"), f"{where}.format[0].w"), _int(first.get("h"), f"{where}.format[0].h")
    return f"{w}x{h}" if w is not None and h is not None else None


def _segments(user: Mapping[str, Any]) -> list[str] | None:
    data = user.get("data")
    if data is None:
        return None
    if not isinstance(data, list):
        raise MappingError("wrong_type", "user.data must be an array")
    out: list[str] = []
    for i, entry in enumerate(data):
        if not isinstance(entry, Mapping):
            raise MappingError("wrong_type", f"user.data[{i}] must be an object")
        segs = entry.get("segment")
        data_id = _str(entry.get("id"), f"user.data[{i}].id")
        if not segs:
            if data_id is not None:
                out.append(data_id)
            continue
        if not isinstance(segs, list):
            raise MappingError("wrong_type", f"user.data[{i}].segment must be an array")
        for j, seg in enumerate(segs):
            if not isinstance(seg, Mapping):
                raise MappingError("wrong_type", f"user.data[{i}].segment[{j}] must be an object")
            seg_id = _str(seg.get("id"), f"user.data[{i}].segment[{j}].id")
            if seg_id is not None:
                out.append(seg_id)
            elif seg.get("value") is not None:
                out.append(f"{data_id or ''}:{_str(seg.get('value'), f'user.data[{i}].segment[{j}].value')}")
    return out


def impression_fields(
    request: Mapping[str, Any],
    imp: Mapping[str, Any],
    ad: Mapping[str, Any] | None,
    event_time: datetime,
) -> dict[str, Any]:
    """Raw feature fields of one impression of ``request``, shown with ``ad`` at ``event_time``.

    ``imp`` is one element of ``request['imp']``. ``event_time`` must be timezone-aware
    (naive times are taken as UTC).
    """
    if not isinstance(request, Mapping):
        raise MappingError("wrong_type", "bid request must be a JSON object")
    if not isinstance(imp, Mapping):
        raise MappingError("wrong_type", "imp must be an object")
    site = _obj(request, "site", "request")
    app = _obj(request, "app", "request")
    if site and app:
        raise MappingError("invalid", "bid request has both site and app; OpenRTB allows one")
    inv, inv_name = (site, "site") if site else (app, "app") if app else ({}, None)
    publisher = _obj(inv, "publisher", inv_name or "site")
    device = _obj(request, "device", "request")
    user = _obj(request, "user", "request")
    geo = _obj(device, "geo", "device") or _obj(user, "geo", "user")

    if "banner" in imp and imp["banner"] is not None:
        fmt, creative_obj = "banner", _obj(imp, "banner", "imp")
    elif "video" in imp and imp["video"] is not None:
        fmt, creative_obj = "video", _obj(imp, "video", "imp")
    elif "native" in imp and imp["native"] is not None:
        fmt, creative_obj = "native", {}
    elif "audio" in imp and imp["audio"] is not None:
        fmt, creative_obj = "audio", {}
    else:
        fmt, creative_obj = None, {}

    ad = ad or {}
    if not isinstance(ad, Mapping):
        raise MappingError("wrong_type", "ad must be an object")
    if event_time.tzinfo is None:
        event_time = event_time.replace(tzinfo=timezone.utc)
    t = event_time.astimezone(timezone.utc)
    return {
        "inventory_type": inv_name,
        "publisher_id": _str(publisher.get("id"), f"{inv_name}.publisher.id"),
        "site_id": _str(inv.get("id"), f"{inv_name}.id"),
        "domain": _str(inv.get("domain") if inv_name == "site" else inv.get("bundle"), f"{inv_name}.domain"),
        "tag_id": _str(imp.get("tagid"), "imp.tagid"),
        "ad_format": fmt,
        "ad_size": _size(creative_obj, f"imp.{fmt}") if creative_obj else None,
        "ad_pos": _int(creative_obj.get("pos"), f"imp.{fmt}.pos") if creative_obj else None,
        "bidfloor": _float(imp.get("bidfloor"), "imp.bidfloor"),
        "device_type": _int(device.get("devicetype"), "device.devicetype"),
        "os": _str(device.get("os"), "device.os"),
        "make": _str(device.get("make"), "device.make"),
        "model": _str(device.get("model"), "device.model"),
        "connection_type": _int(device.get("connectiontype"), "device.connectiontype"),
        "country": _str(geo.get("country"), "geo.country"),
        "region": _str(geo.get("region"), "geo.region"),
        "user_id": _str(user.get("id") or user.get("buyeruid") or device.get("ifa"), "user.id"),
        "user_segments": _segments(user),
        "advertiser_id": _str(ad.get("advertiser_id"), "ad.advertiser_id"),
        "campaign_id": _str(ad.get("campaign_id"), "ad.campaign_id"),
        "creative_id": _str(ad.get("creative_id"), "ad.creative_id"),
        "creative_type": _str(ad.get("creative_type"), "ad.creative_type"),
        "hour_of_day": t.hour,
        "day_of_week": t.weekday(),
    }


def request_impressions(request: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The ``imp`` array of a bid request, validated to be a non-empty list of objects."""
    imps = request.get("imp") if isinstance(request, Mapping) else None
    if not isinstance(imps, list) or not imps:
        raise MappingError("missing_field", "bid request has no imp array (OpenRTB requires at least one imp)")
    for i, imp in enumerate(imps):
        if not isinstance(imp, Mapping):
            raise MappingError("wrong_type", f"imp[{i}] must be an object")
    return imps
