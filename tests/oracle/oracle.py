#!/usr/bin/env python3
"""kpiflow KPI oracle: a plain, independent recomputation of every KPI from the full event log.

It shares no code and no definitions file with the Rust engine. It reads the canonical events
(JSON lines, arrival order) and the KPI updates the pipeline published (JSON lines, an upsert
stream), keeps the current row of every key, recomputes numerator and denominator over the
row's window [start, end) from the whole log, and reports every difference.

The definitions it implements are written out in tests/oracle/README.md.

Library use (see test_oracle.py):

    o = Oracle(events, default_tz="America/Los_Angeles")
    num, den = o.kpi("aov", {"shop": "s1", "channel": "amazon", "marketplace": "US"},
                     "2026-11-02T08:00:00Z", "2026-11-03T08:00:00Z")
    # or in one call:
    num, den = compute(events, "aov", scope, start, end)

Numbers are Decimal; a value that is not a finite decimal (e.g. 23/24 of a day) is a Fraction.
Standard library only.
"""

import argparse
import bisect
import json
import re
import sys
from collections import OrderedDict, defaultdict, namedtuple
from datetime import date, datetime, timedelta, timezone
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow, Rounded
from fractions import Fraction
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TZ = "America/Los_Angeles"
DEFAULT_CURRENCY = "USD"
SELLER_FULFILLED = frozenset({"merchant", "third_party"})
UTC = timezone.utc

# Exact arithmetic: any rounding raises instead of silently losing a digit.
_CTX = Context(prec=200, traps=[InvalidOperation, Inexact, Rounded, Overflow])
ZERO = Decimal(0)
ONE = Decimal(1)


class BadInput(Exception):
    """Input the oracle cannot judge (exit status 2)."""


Scope = namedtuple("Scope", "shop channel marketplace sku campaign")


def make_scope(scope):
    """A Scope from a dict (as in a KPI update), a tuple or a Scope."""
    if isinstance(scope, Scope):
        return scope
    if isinstance(scope, dict):
        try:
            return Scope(scope["shop"], scope["channel"], scope["marketplace"],
                         scope.get("sku"), scope.get("campaign"))
        except KeyError as e:
            raise BadInput(f"scope without {e.args[0]!r}: {scope!r}") from None
    t = tuple(scope) + (None,) * (5 - len(tuple(scope)))
    return Scope(*t[:5])


# ---------------------------------------------------------------------------------------------
# Parsing helpers


def parse_time(value, what="timestamp"):
    """An RFC 3339 timestamp as an aware UTC datetime."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise BadInput(f"{what}: datetime without time zone")
        return value.astimezone(UTC)
    if not isinstance(value, str):
        raise BadInput(f"{what}: expected an RFC 3339 string, got {value!r}")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise BadInput(f"{what}: not an RFC 3339 timestamp: {value!r}") from None
    if dt.tzinfo is None:
        raise BadInput(f"{what}: timestamp without offset: {value!r}")
    return dt.astimezone(UTC)


_DECIMAL_RE = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")


def parse_decimal(value, what="decimal"):
    """A decimal string (schema `Decimal`) as a Decimal."""
    if not isinstance(value, str) or not _DECIMAL_RE.match(value):
        raise BadInput(f"{what}: expected a decimal string, got {value!r}")
    return Decimal(value)


def parse_int(value, what="integer"):
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadInput(f"{what}: expected an integer, got {value!r}")
    return Decimal(value)


def fmt_time(dt):
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fmt_num(x):
    """Decimal/Fraction/None as text; trailing zeros removed."""
    if x is None:
        return "none"
    if isinstance(x, Fraction):
        d = fraction_to_decimal(x)
        if d is None:
            approx = Decimal(x.numerator) / Decimal(x.denominator)
            return f"{x.numerator}/{x.denominator} (~{approx:.12f})"
        x = d
    return _plain(x)


def _plain(d):
    d = d.normalize(_CTX) if d != 0 else Decimal(0)
    s = format(d, "f")
    return s


def fraction_to_decimal(fr):
    """The exact Decimal equal to a Fraction, or None if its decimal expansion never ends."""
    n, d = fr.numerator, fr.denominator
    twos = fives = 0
    while d % 2 == 0:
        d //= 2
        twos += 1
    while d % 5 == 0:
        d //= 5
        fives += 1
    if d != 1:
        return None
    k = max(twos, fives)
    scaled = n * 10 ** k // fr.denominator
    return Decimal(scaled).scaleb(-k, _CTX)


def as_number(fr):
    """Decimal when finite, else the Fraction itself."""
    d = fraction_to_decimal(fr)
    return fr if d is None else d


def _dec_add(a, b):
    return _CTX.add(a, b)


# ---------------------------------------------------------------------------------------------
# Calendar helpers


def zone_of(name):
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise BadInput(f"unknown time zone {name!r}") from None


def local_midnight(d, zone):
    """The UTC instant at which local date `d` starts in `zone`."""
    return datetime(d.year, d.month, d.day, tzinfo=zone).astimezone(UTC)


def business_date(instant, zone):
    return instant.astimezone(zone).date()


def window_days(start, end):
    """(end - start) in hours / 24, exact."""
    seconds = int((end - start).total_seconds())
    return Fraction(seconds, 3600 * 24)


def check_window(window, zone_name):
    """Calendar-boundary problems of a published window (list of strings, empty when fine)."""
    problems = []
    kind = window.get("kind")
    start = parse_time(window.get("start"), "window.start")
    end = parse_time(window.get("end"), "window.end")
    if not start < end:
        problems.append(f"window start {fmt_time(start)} not before end {fmt_time(end)}")
    for label, t in (("start", start), ("end", end)):
        if t.minute or t.second or t.microsecond:
            problems.append(f"window {label} {fmt_time(t)} not on a whole UTC hour")
    if kind not in ("business_day", "week", "month"):
        return problems
    if window.get("time_zone") != zone_name:
        problems.append(f"window.time_zone {window.get('time_zone')!r}, business zone is {zone_name!r}")
    zone = zone_of(zone_name)
    ls = start.astimezone(zone)
    d0 = ls.date()
    if local_midnight(d0, zone) != start:
        problems.append(f"{kind} start {fmt_time(start)} is not local midnight in {zone_name}")
        return problems
    if kind == "business_day":
        d1 = d0 + timedelta(days=1)
    elif kind == "week":
        if d0.weekday() != 0:
            problems.append(f"week start {d0} is not a Monday")
        d1 = d0 + timedelta(days=7)
    else:
        if d0.day != 1:
            problems.append(f"month start {d0} is not the first of a month")
        d1 = date(d0.year + (d0.month == 12), d0.month % 12 + 1, 1)
    want_end = local_midnight(d1, zone)
    if end != want_end:
        problems.append(f"{kind} end {fmt_time(end)}, expected {fmt_time(want_end)} (local {d1} 00:00)")
    return problems


# ---------------------------------------------------------------------------------------------
# The oracle


# measure names used by KPI definitions; ad measures are the only ones a campaign scope filters
AD_MEASURES = frozenset({"ad_spend", "ad_sales", "ad_clicks", "ad_impressions", "ad_orders"})
INVENTORY_MEASURES = frozenset({"active_sku_days", "stockout_sku_days", "sellable_unit_days"})

Fact = namedtuple("Fact", "instant value sku campaign")


def _money(payload, field, what):
    m = payload.get(field)
    if not isinstance(m, dict):
        raise BadInput(f"{what}: payload.{field} is not a money object")
    return parse_decimal(m.get("amount"), f"{what}: payload.{field}.amount")


def _foreign_currency(obj, currency):
    """True when any money object ({amount, currency}) inside `obj` is not in `currency`."""
    if isinstance(obj, dict):
        if "amount" in obj and "currency" in obj and obj.get("currency") != currency:
            return True
        return any(_foreign_currency(v, currency) for v in obj.values())
    if isinstance(obj, list):
        return any(_foreign_currency(v, currency) for v in obj)
    return False


class Oracle:
    """All measures of one event log, indexed for window sums."""

    def __init__(self, events, refused=(), default_tz=DEFAULT_TZ, tz=None,
                 currency=DEFAULT_CURRENCY):
        self.default_tz = default_tz
        self.tz = dict(tz or {})
        self.currency = currency
        zone_of(default_tz)
        for z in self.tz.values():
            zone_of(z)
        self.stats = OrderedDict(read=0, duplicates=0, refused=0, foreign_currency=0, kept=0)
        refused = set(refused)

        # 1. duplicates (first wins), refused, foreign currency
        seen = set()
        kept = []
        for i, e in enumerate(events):
            self.stats["read"] += 1
            if not isinstance(e, dict):
                raise BadInput(f"event #{i + 1} is not a JSON object")
            eid = e.get("event_id")
            if not isinstance(eid, str):
                raise BadInput(f"event #{i + 1} has no string event_id")
            if eid in seen:
                self.stats["duplicates"] += 1
                continue
            seen.add(eid)
            if eid in refused:
                self.stats["refused"] += 1
                continue
            if _foreign_currency(e.get("payload"), currency):
                self.stats["foreign_currency"] += 1
                continue
            kept.append(self._header(e, i))
        self.stats["kept"] = len(kept)

        # 2. per-shop newest event time: a shop is (shop, channel, marketplace); heartbeats
        #    carry wall-clock time, not a fact's time, and account.health_metric is a
        #    reference value (Amazon's own figure), not a fact: neither moves it
        self.newest_by_shop = {}
        for h, e in kept:
            if e["schema"] in ("source.heartbeat", "account.health_metric"):
                continue
            shop = (h["shop"], h["channel"], h["mkt"])
            if shop not in self.newest_by_shop or h["t"] > self.newest_by_shop[shop]:
                self.newest_by_shop[shop] = h["t"]

        # 3. orders with a tracked shipment (valid tracking and a promised delivery date)
        self._tracked_orders = {
            (h["shop"], e["payload"].get("order_id")) for h, e in kept
            if e["schema"] == "order.shipped" and e["payload"].get("tracking_valid") is True
            and e["payload"].get("deliver_by") is not None}

        # 4. facts
        self._facts = defaultdict(list)   # (measure, shop, channel, marketplace) -> [Fact]
        self._cache = {}
        newest = {}                        # restated/once-per-order kinds: kind-key -> (h, e)
        self._snapshots = defaultdict(list)  # (shop, channel, mkt, sku, location) -> [(t, id, sellable)]
        for h, e in kept:
            try:
                self._facts_of(h, e, newest)
            except (KeyError, TypeError, AttributeError) as err:
                raise BadInput(f"event {h['id']}: malformed {e['schema']} payload ({err!r})") from None
        self._facts_of_newest(newest)
        self._inventory_facts()

    # -- input -------------------------------------------------------------------------------

    @staticmethod
    def _header(e, i):
        for f in ("schema", "shop", "channel", "marketplace"):
            if not isinstance(e.get(f), str):
                raise BadInput(f"event {e.get('event_id')!r} (#{i + 1}): header field {f!r} missing")
        if not isinstance(e.get("payload"), dict):
            raise BadInput(f"event {e['event_id']!r}: payload is not an object")
        sku = e.get("sku")
        if sku is not None and not isinstance(sku, str):
            raise BadInput(f"event {e['event_id']!r}: sku is not a string")
        h = {"id": e["event_id"], "shop": e["shop"], "channel": e["channel"],
             "mkt": e["marketplace"], "sku": sku,
             "t": parse_time(e.get("event_time"), f"event {e['event_id']}: event_time")}
        return h, e

    @staticmethod
    def _field(e, name, typ):
        v = e["payload"].get(name)
        if not isinstance(v, typ) or isinstance(v, bool) and typ is not bool:
            raise BadInput(f"event {e['event_id']}: payload.{name} missing or not {typ.__name__}")
        return v

    def zone_name(self, marketplace):
        return self.tz.get(marketplace, self.default_tz)

    def zone(self, marketplace):
        return zone_of(self.zone_name(marketplace))

    @staticmethod
    def seller_fulfilled(payload):
        """Whether an order fact is about a seller-fulfilled order: its own `fulfilment`, and
        a fact that does not say counts as seller-fulfilled (schemas: the accountable side)."""
        ful = payload.get("fulfilment")
        return ful is None or ful in SELLER_FULFILLED

    def _add(self, measure, h, instant, value, campaign=None, sku=None):
        self._facts[(measure, h["shop"], h["channel"], h["mkt"])].append(
            Fact(instant, value, h["sku"] if sku is None else sku, campaign))

    # -- facts -------------------------------------------------------------------------------

    def _facts_of(self, h, e, newest):
        schema = e["schema"]
        p = e["payload"]
        t = h["t"]
        eid = h["id"]
        what = f"event {eid}"

        def keep_newest(key, version):
            cur = newest.get(key)
            if cur is None or (version, eid) > cur[0]:
                newest[key] = ((version, eid), h, e)

        if schema == "order.placed":
            oid = self._field(e, "order_id", str)
            amount = _money(p, "total", what)
            units = parse_int(p.get("units"), f"{what}: payload.units")
            ful = p.get("fulfilment")
            if not isinstance(ful, str):
                raise BadInput(f"{what}: payload.fulfilment missing")
            self._add("orders", h, t, ONE)
            self._add("gmv", h, t, amount)
            self._add("units_ordered", h, t, units)
            if ful in SELLER_FULFILLED:
                self._add("orders_sf", h, t, ONE)
            if ful != "wfs":
                self._add("orders_non_wfs", h, t, ONE)
        elif schema == "order.paid":
            self._add("paid_revenue", h, t, _money(p, "amount", what))
        elif schema == "order.shipped":
            oid = self._field(e, "order_id", str)
            placed_at = parse_time(p.get("placed_at"), f"{what}: placed_at")
            ship_by = parse_time(p.get("ship_by"), f"{what}: ship_by")
            deliver_by = p.get("deliver_by")
            deliver_by = None if deliver_by is None else parse_time(deliver_by, f"{what}: deliver_by")
            units = parse_int(p.get("units"), f"{what}: payload.units")
            valid = self._field(e, "tracking_valid", bool)
            late = t > ship_by
            promise = deliver_by if deliver_by is not None else t
            self._add("units_shipped_by_order_date", h, placed_at, units)
            if self.seller_fulfilled(p):
                self._add("shipments_sf_ship_by", h, ship_by, ONE)
                self._add("late_shipments_sf_ship_by" if late else "on_time_shipments_sf_ship_by",
                          h, ship_by, ONE)
                self._add("shipments_by_promise_sf", h, promise, ONE)
                if valid:
                    self._add("valid_tracking_shipments_sf", h, promise, ONE)
                if valid and deliver_by is not None:
                    self._add("tracked_units_sf", h, deliver_by, units)
        elif schema == "order.delivered":
            oid = self._field(e, "order_id", str)
            deliver_by = parse_time(p.get("deliver_by"), f"{what}: deliver_by")
            units = parse_int(p.get("units"), f"{what}: payload.units")
            on_time = t <= deliver_by
            # Only tracked units count on either side: a delivery of a parcel that was never
            # shipped with valid tracking (and a promise) is outside the rate.
            if self.seller_fulfilled(p) and on_time and (h["shop"], oid) in self._tracked_orders:
                self._add("units_delivered_on_time_sf", h, deliver_by, units)
        elif schema == "order.returned":
            placed_at = parse_time(p.get("placed_at"), f"{what}: placed_at")
            self._add("units_returned", h, placed_at,
                      parse_int(p.get("units"), f"{what}: payload.units"))
        elif schema == "order.cancelled":
            oid = self._field(e, "order_id", str)
            parse_time(p.get("placed_at"), f"{what}: placed_at")
            self._field(e, "cancelled_by", str)
            keep_newest(("cancel", h["shop"], oid), t)
        elif schema == "order.defect":
            oid = self._field(e, "order_id", str)
            parse_time(p.get("placed_at"), f"{what}: placed_at")
            kind = self._field(e, "kind", str)
            keep_newest(("defect", h["shop"], oid), t)
            if kind == "negative_feedback":
                keep_newest(("negative_feedback", h["shop"], oid), t)
        elif schema == "order.refunded":
            oid = self._field(e, "order_id", str)
            parse_time(p.get("placed_at"), f"{what}: placed_at")
            _money(p, "amount", what)
            fault = self._field(e, "seller_fault", bool)
            keep_newest(("refund", h["shop"], oid), t)
            if fault and p.get("fulfilment") != "wfs":
                keep_newest(("refund_seller_fault_non_wfs", h["shop"], oid), t)
        elif schema == "order.fee":
            # Fee lines (signed: what the fee costs the seller) feed no built-in KPI yet; the
            # profit KPIs will read them. Checked, so a malformed one is still refused.
            _money(p, "amount", what)
            self._field(e, "fee_type", str)
        elif schema == "ad.performance":
            key = tuple(self._field(e, f, str) for f in ("platform", "account_id", "campaign_id", "date"))
            as_of = parse_time(p.get("as_of"), f"{what}: as_of")
            _money(p, "spend", what)
            _money(p, "attributed_sales", what)
            try:
                date.fromisoformat(key[3])
            except ValueError:
                raise BadInput(f"{what}: payload.date {key[3]!r} is not a date") from None
            keep_newest(("ad",) + key, as_of)
        elif schema == "inventory.snapshot":
            if h["sku"] is None:
                return  # a snapshot names its SKU in the header; without one it cannot be placed
            loc = self._field(e, "location", str)
            sellable = parse_int(p.get("sellable"), f"{what}: payload.sellable")
            self._snapshots[(h["shop"], h["channel"], h["mkt"], h["sku"], loc)].append((t, eid, sellable))
        # other schemas (shipment.milestone, source.heartbeat, ...) carry no measure

    def _facts_of_newest(self, newest):
        for key, (_, h, e) in newest.items():
            kind = key[0]
            p = e["payload"]
            if kind == "ad":
                zone = self.zone(h["mkt"])
                at = local_midnight(date.fromisoformat(p["date"]), zone)
                c = p["campaign_id"]
                self._add("ad_spend", h, at, _money(p, "spend", ""), campaign=c)
                self._add("ad_sales", h, at, _money(p, "attributed_sales", ""), campaign=c)
                self._add("ad_clicks", h, at, parse_int(p.get("clicks"), "clicks"), campaign=c)
                self._add("ad_impressions", h, at, parse_int(p.get("impressions"), "impressions"), campaign=c)
                self._add("ad_orders", h, at, parse_int(p.get("attributed_orders"), "attributed_orders"), campaign=c)
                continue
            at = parse_time(p["placed_at"])
            if kind == "cancel":
                self._add("cancelled_orders", h, at, ONE)
                if p["cancelled_by"] == "seller" and self.seller_fulfilled(p):
                    self._add("seller_cancels_sf", h, at, ONE)
            elif kind == "defect":
                self._add("defective_orders", h, at, ONE)
            elif kind == "negative_feedback":
                self._add("negative_feedback_orders", h, at, ONE)
            elif kind == "refund":
                self._add("refunded_orders", h, at, ONE)
            elif kind == "refund_seller_fault_non_wfs":
                self._add("seller_fault_refunded_orders_non_wfs", h, at, ONE)

    def _inventory_facts(self):
        for k in self._snapshots:
            self._snapshots[k].sort()
        by_sku = defaultdict(list)
        for (shop, ch, mkt, sku, loc), snaps in self._snapshots.items():
            by_sku[(shop, ch, mkt, sku)].append(snaps)
        for (shop, ch, mkt, sku), locations in by_sku.items():
            zone = self.zone(mkt)
            h = {"shop": shop, "channel": ch, "mkt": mkt, "sku": sku}
            first = min(business_date(s[0][0], zone) for s in locations)
            current = business_date(self.newest_by_shop[(shop, ch, mkt)], zone)
            d = first
            while d <= current:
                day_end = local_midnight(d + timedelta(days=1), zone)
                level = ZERO
                for snaps in locations:
                    s = _newest_before(snaps, day_end)
                    if s is not None:
                        level = _dec_add(level, s[2])
                at = local_midnight(d, zone)
                self._add("active_sku_days", h, at, ONE)
                if level == 0:
                    self._add("stockout_sku_days", h, at, ONE)
                self._add("sellable_unit_days", h, at, level)
                d += timedelta(days=1)

    # -- queries -----------------------------------------------------------------------------

    def _series(self, measure, scope):
        key = (measure,) + tuple(scope)
        s = self._cache.get(key)
        if s is None:
            facts = [f for f in self._facts.get((measure, scope.shop, scope.channel, scope.marketplace), ())
                     if (scope.sku is None or f.sku == scope.sku)
                     and (scope.campaign is None or measure not in AD_MEASURES or f.campaign == scope.campaign)]
            facts.sort(key=lambda f: f.instant)
            times = [f.instant for f in facts]
            prefix = [ZERO]
            for f in facts:
                prefix.append(_dec_add(prefix[-1], f.value))
            s = self._cache[key] = (times, prefix)
        return s

    def sum(self, measure, scope, start, end):
        """Sum of one base measure over facts booked in [start, end)."""
        scope = make_scope(scope)
        start, end = parse_time(start, "start"), parse_time(end, "end")
        times, prefix = self._series(measure, scope)
        i = bisect.bisect_left(times, start)
        j = bisect.bisect_left(times, end)
        return _CTX.subtract(prefix[j], prefix[i])

    def sellable_now(self, scope, end):
        """Sum over (sku, location) of the sellable of its newest snapshot with event_time < end."""
        scope = make_scope(scope)
        end = parse_time(end, "end")
        total = ZERO
        for (shop, ch, mkt, sku, loc), snaps in self._snapshots.items():
            if (shop, ch, mkt) != (scope.shop, scope.channel, scope.marketplace):
                continue
            if scope.sku is not None and sku != scope.sku:
                continue
            s = _newest_before(snaps, end)
            if s is not None:
                total = _dec_add(total, s[2])
        return total

    def measure(self, name, scope, start, end):
        """A base or derived measure over [start, end): Decimal, or Fraction if not finite."""
        scope = make_scope(scope)
        start, end = parse_time(start, "start"), parse_time(end, "end")
        if name == "net_orders":
            return _CTX.subtract(self.sum("orders", scope, start, end),
                                 self.sum("cancelled_orders", scope, start, end))
        if name == "sellable_now":
            return self.sellable_now(scope, end)
        if name == "sellable_now_x_days":
            return as_number(Fraction(self.sellable_now(scope, end)) * window_days(start, end))
        if name == "units_ordered_x_days":
            return as_number(Fraction(self.sum("units_ordered", scope, start, end)) * window_days(start, end))
        return self.sum(name, scope, start, end)

    def definition(self, kpi, scope):
        """(numerator measure, denominator measure or None) of a KPI for a scope."""
        scope = make_scope(scope)
        if kpi not in KPIS:
            raise BadInput(f"unknown KPI {kpi!r}")
        if kpi == "refund_rate" and scope.channel == "walmart":
            return WALMART_REFUND_RATE
        return KPIS[kpi]

    def kpi(self, kpi, scope, start, end):
        """(numerator, denominator) of a KPI; denominator None for plain sums and counts."""
        num, den = self.definition(kpi, scope)
        n = self.measure(num, scope, start, end)
        d = None if den is None else self.measure(den, scope, start, end)
        return n, d


def _newest_before(snaps, end):
    """The newest (t, id, sellable) of a sorted list with t < end, or None."""
    i = bisect.bisect_left(snaps, (end,))
    return snaps[i - 1] if i else None


# KPI id -> (numerator measure, denominator measure or None)
KPIS = OrderedDict([
    ("gmv", ("gmv", None)),
    ("orders", ("orders", None)),
    ("net_orders", ("net_orders", None)),
    ("units", ("units_ordered", None)),
    ("aov", ("gmv", "orders")),
    ("paid_revenue", ("paid_revenue", None)),
    ("fill_rate", ("units_shipped_by_order_date", "units_ordered")),
    # Marketplace scopes (domain.md section 2): seller-fulfilled orders only, booked on the
    # expected ship date / promised delivery date.
    ("on_time_ship_rate", ("on_time_shipments_sf_ship_by", "shipments_sf_ship_by")),
    ("late_shipment_rate", ("late_shipments_sf_ship_by", "shipments_sf_ship_by")),
    ("cancellation_rate", ("seller_cancels_sf", "orders_sf")),
    ("valid_tracking_rate", ("valid_tracking_shipments_sf", "shipments_by_promise_sf")),
    ("on_time_delivery_rate", ("units_delivered_on_time_sf", "tracked_units_sf")),
    ("order_defect_rate", ("defective_orders", "orders")),
    ("negative_feedback_rate", ("negative_feedback_orders", "orders")),
    ("return_rate", ("units_returned", "units_shipped_by_order_date")),
    ("refund_rate", ("refunded_orders", "orders")),
    ("roas", ("ad_sales", "ad_spend")),
    ("acos", ("ad_spend", "ad_sales")),
    ("tacos", ("ad_spend", "gmv")),
    ("cpc", ("ad_spend", "ad_clicks")),
    ("ctr", ("ad_clicks", "ad_impressions")),
    ("cvr", ("ad_orders", "ad_clicks")),
    ("stockout_rate", ("stockout_sku_days", "active_sku_days")),
    ("stockout_rate_by_sku", ("stockout_sku_days", "active_sku_days")),
    ("days_of_cover", ("sellable_now_x_days", "units_ordered")),
    ("inventory_turnover", ("units_ordered_x_days", "sellable_unit_days")),
])

# Walmart's refund rate: seller-fault refunds; WFS orders exempt from both sides.
WALMART_REFUND_RATE = ("seller_fault_refunded_orders_non_wfs", "orders_non_wfs")


def compute(events, kpi, scope, start, end, **options):
    """One-shot: (numerator, denominator) of `kpi` for `scope` over [start, end)."""
    return Oracle(events, **options).kpi(kpi, scope, start, end)


# ---------------------------------------------------------------------------------------------
# Comparing the published updates


def same_number(streamed, oracle, min_digits=6):
    """Exact comparison. `streamed` Decimal or None; `oracle` Decimal, Fraction or None.

    When the oracle's exact value has no finite decimal expansion (only window_days products of
    23- or 25-hour days can), the streamed decimal must carry at least `min_digits` fractional
    digits and lie within one unit of its last digit of the exact value.
    """
    if streamed is None or oracle is None:
        return streamed is None and oracle is None
    if isinstance(oracle, Fraction):
        d = fraction_to_decimal(oracle)
        if d is None:
            k = max(0, -streamed.as_tuple().exponent)
            return k >= min_digits and abs(Fraction(streamed) - oracle) <= Fraction(1, 10 ** k)
        oracle = d
    return streamed == oracle


def read_jsonl(path, what):
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise BadInput(f"{path}:{n}: {what} line is not JSON ({e.msg})") from None
    except OSError as e:
        raise BadInput(f"cannot read {what} file {path}: {e}") from None
    return rows


def read_refused(path):
    try:
        with open(path, encoding="utf-8") as f:
            return {ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")}
    except OSError as e:
        raise BadInput(f"cannot read refused file {path}: {e}") from None


def current_rows(updates):
    """The row with the highest revision per (kpi, scope, window.name, window.start)."""
    best = OrderedDict()
    for i, u in enumerate(updates):
        if not isinstance(u, dict):
            raise BadInput(f"update #{i + 1} is not a JSON object")
        try:
            kpi = u["kpi"]
            s = make_scope(u["scope"])
            w = u["window"]
            key = (kpi, tuple(s), w["name"], fmt_time(parse_time(w["start"], "window.start")))
            rev = u["revision"]
        except (KeyError, TypeError) as e:
            raise BadInput(f"update #{i + 1}: missing field {e}") from None
        if isinstance(rev, bool) or not isinstance(rev, int):
            raise BadInput(f"update #{i + 1}: revision is not an integer")
        if key not in best or rev >= best[key]["revision"]:
            best[key] = u
    return best


def compare(oracle, updates, kpis=None, min_digits=6):
    """Compare every current update row of the selected KPIs with the oracle.

    Returns {"per_kpi": {kpi: [compared, agreeing, differing]}, "differences": [...],
    "skipped": {kpi: rows}}.
    """
    selected = list(KPIS) if kpis is None else list(kpis)
    for k in selected:
        if k not in KPIS:
            raise BadInput(f"the oracle does not know KPI {k!r}")
    per_kpi = OrderedDict((k, [0, 0, 0]) for k in selected)
    skipped = defaultdict(int)
    diffs = []
    for key, u in current_rows(updates).items():
        kpi = key[0]
        if kpi not in per_kpi:
            skipped[kpi] += 1
            continue
        scope = make_scope(u["scope"])
        w = u["window"]
        start = parse_time(w["start"], "window.start")
        end = parse_time(w["end"], "window.end")
        zone_name = oracle.zone_name(scope.marketplace)
        problems = check_window(w, zone_name)
        s_num = parse_decimal(u.get("numerator"), f"{kpi} numerator")
        s_den = u.get("denominator")
        s_den = None if s_den is None else parse_decimal(s_den, f"{kpi} denominator")
        o_num, o_den = oracle.kpi(kpi, scope, start, end)
        if not same_number(s_num, o_num, min_digits):
            problems.append("numerator")
        if not same_number(s_den, o_den, min_digits):
            problems.append("denominator")
        stat = per_kpi[kpi]
        stat[0] += 1
        if problems:
            stat[2] += 1
            diffs.append(OrderedDict(
                kpi=kpi,
                scope={k: v for k, v in scope._asdict().items() if v is not None},
                window=OrderedDict(kind=w.get("kind"), name=w.get("name"), start=fmt_time(start),
                                   end=fmt_time(end), time_zone=w.get("time_zone")),
                revision=u["revision"],
                streamed=OrderedDict(numerator=fmt_num(s_num), denominator=fmt_num(s_den)),
                oracle=OrderedDict(numerator=fmt_num(o_num), denominator=fmt_num(o_den)),
                problems=problems))
        else:
            stat[1] += 1
    return {"per_kpi": per_kpi, "differences": diffs, "skipped": dict(skipped)}


def format_report(result, oracle, max_diffs=20):
    lines = []
    st = oracle.stats
    lines.append("events: " + ", ".join(f"{k} {v}" for k, v in st.items()))
    width = max([len(k) for k in result["per_kpi"]] + [5])
    lines.append(f"{'kpi':<{width}}  {'compared':>8}  {'agreeing':>8}  {'differing':>9}")
    tot = [0, 0, 0]
    for k, (c, a, d) in result["per_kpi"].items():
        lines.append(f"{k:<{width}}  {c:>8}  {a:>8}  {d:>9}")
        tot = [tot[0] + c, tot[1] + a, tot[2] + d]
    lines.append(f"{'TOTAL':<{width}}  {tot[0]:>8}  {tot[1]:>8}  {tot[2]:>9}")
    if result["skipped"]:
        lines.append("not checked (KPI not selected or unknown to the oracle): "
                     + ", ".join(f"{k} x{n}" for k, n in sorted(result["skipped"].items())))
    if tot[0] == 0:
        lines.append("WARNING: no window was compared")
    diffs = result["differences"]
    if diffs:
        shown = diffs[:max_diffs]
        lines.append(f"differences (first {len(shown)} of {len(diffs)}):")
        for d in shown:
            s = d["scope"]
            scope = "/".join([s["shop"], s["channel"], s["marketplace"]]
                             + [f"{k}={s[k]}" for k in ("sku", "campaign") if k in s])
            w = d["window"]
            lines.append(
                f"  {d['kpi']} {scope} {w['name']}({w['kind']}) [{w['start']}, {w['end']}) rev {d['revision']}:"
                f" streamed {d['streamed']['numerator']}/{d['streamed']['denominator']}"
                f" oracle {d['oracle']['numerator']}/{d['oracle']['denominator']}"
                f" -- {'; '.join(d['problems'])}")
    return "\n".join(lines)


def _tz_arg(s):
    if "=" not in s:
        raise argparse.ArgumentTypeError(f"expected MARKETPLACE=ZONE, got {s!r}")
    m, z = s.split("=", 1)
    return m, z


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        print(f"oracle: {message}", file=sys.stderr)
        raise SystemExit(2)


def main(argv=None):
    ap = _Parser(description="Recompute every published KPI window from the full event log.")
    ap.add_argument("--events", required=True, help="canonical events, JSON lines, arrival order")
    ap.add_argument("--updates", required=True, help="published KPI updates, JSON lines")
    ap.add_argument("--refused", help="event ids the pipeline refused (dead-lettered), one a line")
    ap.add_argument("--default-tz", default=DEFAULT_TZ, help="business zone of marketplaces without --tz")
    ap.add_argument("--tz", type=_tz_arg, action="append", default=[], metavar="MARKETPLACE=ZONE")
    ap.add_argument("--currency", default=DEFAULT_CURRENCY)
    ap.add_argument("--kpis", help="comma-separated KPI ids (default: all the oracle knows)")
    ap.add_argument("--report", help="write the full result as JSON to this file")
    ap.add_argument("--max-diffs", type=int, default=20)
    ap.add_argument("--min-digits", type=int, default=6,
                    help="fractional digits a streamed value needs when the exact value never ends")
    args = ap.parse_args(argv)
    try:
        kpis = None
        if args.kpis:
            kpis = [k.strip() for k in args.kpis.split(",") if k.strip()]
            unknown = [k for k in kpis if k not in KPIS]
            if unknown:
                raise BadInput(f"the oracle does not know KPI(s): {', '.join(unknown)}")
        refused = read_refused(args.refused) if args.refused else ()
        events = read_jsonl(args.events, "event")
        updates = read_jsonl(args.updates, "update")
        oracle = Oracle(events, refused=refused, default_tz=args.default_tz, tz=dict(args.tz),
                        currency=args.currency)
        result = compare(oracle, updates, kpis, args.min_digits)
    except BadInput as e:
        print(f"oracle: bad input: {e}", file=sys.stderr)
        return 2
    print(format_report(result, oracle, args.max_diffs))
    if args.report:
        report = OrderedDict(stats=oracle.stats,
                             per_kpi={k: dict(compared=c, agreeing=a, differing=d)
                                      for k, (c, a, d) in result["per_kpi"].items()},
                             skipped=result["skipped"], differences=result["differences"])
        try:
            with open(args.report, "w", encoding="utf-8") as f:
                json.dump(report, f, indent=2)
                f.write("\n")
        except OSError as e:
            print(f"oracle: cannot write report {args.report}: {e}", file=sys.stderr)
            return 2
    return 1 if result["differences"] else 0


if __name__ == "__main__":
    sys.exit(main())
