"""Unit tests of the KPI oracle: small logs whose expected values are worked out by hand.

Run: python3 -m unittest discover -s tests/oracle

Time reference used throughout (America/Los_Angeles, the default business zone):
  Pacific business day 2026-11-02 = [2026-11-02T08:00Z, 2026-11-03T08:00Z)   (PST, 24 h)
  Pacific business day 2026-11-01 = [2026-11-01T07:00Z, 2026-11-02T08:00Z)   (DST ends, 25 h)
  Pacific business day 2026-03-08 = [2026-03-08T08:00Z, 2026-03-09T07:00Z)   (DST starts, 23 h)
"""

import contextlib
import io
import json
import os
import sys
import tempfile
import unittest
from decimal import Decimal as D
from fractions import Fraction

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import oracle  # noqa: E402
from oracle import Oracle, compute  # noqa: E402

S = {"shop": "s1", "channel": "amazon", "marketplace": "US"}
WM = {"shop": "s1", "channel": "walmart", "marketplace": "US"}
DAY = ("2026-11-02T08:00:00Z", "2026-11-03T08:00:00Z")          # Pacific 2026-11-02


def ev(schema, eid, t, payload, shop="s1", channel="amazon", mkt="US", sku="A"):
    e = {"event_id": eid, "schema": schema, "schema_version": 1, "source": "test",
         "shop": shop, "channel": channel, "marketplace": mkt, "event_time": t,
         "source_tz": "America/Los_Angeles", "ingest_time": t, "payload": payload}
    if sku is not None:
        e["sku"] = sku
    return e


def usd(a, cur="USD"):
    return {"amount": a, "currency": cur}


def placed(eid, oid, t, amount="10.00", units=1, ful="merchant", cur="USD", **kw):
    return ev("order.placed", eid, t, {"order_id": oid, "total": usd(amount, cur), "units": units,
                                       "fulfilment": ful}, **kw)


def paid(eid, oid, t, amount, placed_at="2026-11-02T09:00:00Z", **kw):
    return ev("order.paid", eid, t, {"order_id": oid, "placed_at": placed_at, "amount": usd(amount)}, **kw)


def with_ful(p, ful):
    """An order fact's payload, with `fulfilment` where the source says it."""
    if ful is not None:
        p["fulfilment"] = ful
    return p


def shipped(eid, oid, t, placed_at, ship_by, units=1, deliver_by=None, valid=True, ful=None, **kw):
    p = {"order_id": oid, "placed_at": placed_at, "ship_by": ship_by, "units": units,
         "tracking_valid": valid}
    if deliver_by is not None:
        p["deliver_by"] = deliver_by
    return ev("order.shipped", eid, t, with_ful(p, ful), **kw)


def delivered(eid, oid, t, deliver_by, units, placed_at="2026-11-01T20:00:00Z", ful=None, **kw):
    return ev("order.delivered", eid, t, with_ful({"order_id": oid, "placed_at": placed_at,
                                                   "deliver_by": deliver_by, "units": units}, ful), **kw)


def cancelled(eid, oid, t, by, placed_at="2026-11-02T09:00:00Z", ful=None, **kw):
    return ev("order.cancelled", eid, t, with_ful({"order_id": oid, "placed_at": placed_at,
                                                   "cancelled_by": by}, ful), **kw)


def defect(eid, oid, t, kind, placed_at="2026-11-02T09:00:00Z", **kw):
    return ev("order.defect", eid, t, {"order_id": oid, "placed_at": placed_at, "kind": kind}, **kw)


def refunded(eid, oid, t, fault=True, placed_at="2026-11-02T09:00:00Z", amount="5.00", ful=None, **kw):
    return ev("order.refunded", eid, t, with_ful({"order_id": oid, "placed_at": placed_at,
                                                  "amount": usd(amount), "seller_fault": fault}, ful), **kw)


def returned(eid, oid, t, units, placed_at, **kw):
    return ev("order.returned", eid, t, {"order_id": oid, "placed_at": placed_at, "units": units}, **kw)


def ad(eid, campaign, day, as_of, spend, sales, clicks, impressions, orders, cur="USD", **kw):
    return ev("ad.performance", eid, as_of, {
        "platform": "amazon_ads", "account_id": "ACC1", "campaign_id": campaign, "date": day,
        "impressions": impressions, "clicks": clicks, "spend": usd(spend, cur),
        "attributed_orders": orders, "attributed_sales": usd(sales, cur),
        "attribution_window": "7d", "as_of": as_of}, sku=None, **kw)


def snap(eid, sku, loc, t, sellable, **kw):
    return ev("inventory.snapshot", eid, t, {"location": loc, "location_kind": "fba", "sellable": sellable,
                                             "inbound": 0, "reserved": 0}, sku=sku, **kw)


def heartbeat(eid, t, **kw):
    return ev("source.heartbeat", eid, t, {"connector": "x", "errors": 0, "records_published": 1,
                                           "consecutive_failures": 0}, sku=None, **kw)


class SumsAndCounts(unittest.TestCase):
    """gmv, orders, units, aov, paid_revenue; window edges [start, end)."""

    events = [
        placed("p1", "o1", "2026-11-02T10:00:00Z", "25.98", 2),
        placed("p2", "o2", "2026-11-03T07:59:59Z", "4.02", 1),      # last second of the day
        placed("p3", "o3", "2026-11-03T08:00:00Z", "100.00", 5),    # = end: next day
        placed("p4", "o4", "2026-11-02T07:59:00Z", "50.00", 7),     # previous day
        placed("p5", "o5", "2026-11-02T10:00:00Z", "60.00", 9, shop="s2"),   # other shop
        placed("p6", "o6", "2026-11-02T10:00:00Z", "70.00", 9, channel="walmart"),  # other channel
        paid("y1", "o1", "2026-11-02T12:00:00Z", "25.98"),
        paid("y2", "o2", "2026-11-04T12:00:00Z", "4.02"),           # paid two days later
    ]

    def setUp(self):
        self.o = Oracle(self.events)

    def test_gmv(self):
        self.assertEqual(self.o.kpi("gmv", S, *DAY), (D("30.00"), None))

    def test_orders(self):
        self.assertEqual(self.o.kpi("orders", S, *DAY), (D(2), None))

    def test_units(self):
        self.assertEqual(self.o.kpi("units", S, *DAY), (D(3), None))

    def test_aov(self):
        self.assertEqual(self.o.kpi("aov", S, *DAY), (D("30.00"), D(2)))

    def test_paid_revenue_on_paid_time(self):
        self.assertEqual(self.o.kpi("paid_revenue", S, *DAY), (D("25.98"), None))

    def test_one_hour_window(self):
        self.assertEqual(self.o.kpi("orders", S, "2026-11-03T07:00:00Z", "2026-11-03T08:00:00Z"), (D(1), None))

    def test_compute_one_shot(self):
        self.assertEqual(compute(self.events, "gmv", S, *DAY), (D("30.00"), None))


class GeneralRules(unittest.TestCase):
    """Duplicates count once (the first), refused events and foreign-currency events are ignored."""

    events = [
        placed("p1", "o1", "2026-11-02T10:00:00Z", "10.00", 1),
        placed("p1", "o1", "2026-11-02T11:00:00Z", "99.00", 9),    # same event id: a retry
        placed("p2", "o2", "2026-11-02T10:00:00Z", "20.00", 2),    # refused by the pipeline
        placed("p3", "o3", "2026-11-02T10:00:00Z", "30.00", 3, cur="EUR"),  # foreign currency
        ad("a1", "c1", "2026-11-02", "2026-11-03T10:00:00Z", "5.00", "9.00", 10, 100, 1),
        ad("a2", "c1", "2026-11-02", "2026-11-04T10:00:00Z", "7.00", "8.00", 12, 120, 2, cur="CNY"),
    ]

    def setUp(self):
        self.o = Oracle(self.events, refused={"p2"})

    def test_gmv_counts_first_copy_only(self):
        self.assertEqual(self.o.kpi("gmv", S, *DAY), (D("10.00"), None))

    def test_units(self):
        self.assertEqual(self.o.kpi("units", S, *DAY), (D(1), None))

    def test_foreign_currency_ad_version_ignored_entirely(self):
        # the CNY restatement is not a version at all: the USD row stays current
        self.assertEqual(self.o.kpi("roas", S, *DAY), (D("9.00"), D("5.00")))
        self.assertEqual(self.o.kpi("ctr", S, *DAY), (D(10), D(100)))

    def test_stats(self):
        self.assertEqual(dict(self.o.stats), {"read": 6, "duplicates": 1, "refused": 1,
                                              "foreign_currency": 2, "kept": 2})

    def test_other_currency_pipeline(self):
        o = Oracle(self.events, currency="EUR")
        self.assertEqual(o.kpi("gmv", S, *DAY), (D("30.00"), None))


class Cancellations(unittest.TestCase):
    """net_orders, cancellation_rate; restatement newest-wins by (event_time, event_id)."""

    events = [
        placed("p1", "o1", "2026-11-02T09:00:00Z"),
        placed("p2", "o2", "2026-11-02T09:00:00Z"),
        placed("p3", "o3", "2026-11-02T09:00:00Z"),
        placed("p4", "o4", "2026-11-02T09:00:00Z"),
        # o1: buyer, then restated to seller (newer event time) -> seller cancel
        cancelled("c1a", "o1", "2026-11-02T12:00:00Z", "buyer"),
        cancelled("c1b", "o1", "2026-11-02T13:00:00Z", "seller"),
        # o2: the newer version (buyer) arrives first; the older (seller) arrives later -> buyer
        cancelled("c2b", "o2", "2026-11-02T15:00:00Z", "buyer"),
        cancelled("c2a", "o2", "2026-11-02T14:00:00Z", "seller"),
        # o3: two versions at the same instant: the larger event id ("c3z") wins -> seller
        cancelled("c3z", "o3", "2026-11-02T16:00:00Z", "seller"),
        cancelled("c3a", "o3", "2026-11-02T16:00:00Z", "system"),
        # a refund of o4 never replaces (or creates) a cancellation
        refunded("r4", "o4", "2026-11-05T10:00:00Z"),
        # cancelled during the day, but placed the day before: booked at placed_at
        cancelled("c5", "o5", "2026-11-02T10:00:00Z", "seller", placed_at="2026-11-01T20:00:00Z"),
    ]

    def setUp(self):
        self.o = Oracle(self.events)

    def test_net_orders(self):
        # 4 orders placed, o1/o2/o3 have cancellations (o5's is booked on 11-01)
        self.assertEqual(self.o.kpi("net_orders", S, *DAY), (D(1), None))

    def test_cancellation_rate_newest_wins(self):
        # seller cancels: o1 (restated to seller), o3 (event-id tie-break); not o2 (newest buyer)
        self.assertEqual(self.o.kpi("cancellation_rate", S, *DAY), (D(2), D(4)))

    def test_cancellation_booked_at_placed_at(self):
        prev = ("2026-11-01T07:00:00Z", "2026-11-02T08:00:00Z")
        self.assertEqual(self.o.kpi("cancellation_rate", S, *prev), (D(1), D(0)))
        self.assertEqual(self.o.kpi("net_orders", S, *prev), (D(-1), None))

    def test_refund_kind_is_separate(self):
        self.assertEqual(self.o.kpi("refund_rate", S, *DAY), (D(1), D(4)))


class Shipments(unittest.TestCase):
    """on_time_ship_rate, late_shipment_rate, fill_rate, return_rate, valid_tracking_rate."""

    events = [
        placed("pB", "oB", "2026-11-02T09:00:00Z", units=4),
        # on time: shipped exactly at ship_by; placed the day before; promise on 11-05
        shipped("sA", "oA", "2026-11-02T20:00:00Z", placed_at="2026-11-01T18:00:00Z",
                ship_by="2026-11-02T20:00:00Z", units=2, deliver_by="2026-11-05T08:00:00Z", valid=True),
        # late by one second; placed this day; no promise -> promise = event_time; bad tracking
        shipped("sB", "oB", "2026-11-02T21:00:00Z", placed_at="2026-11-02T09:00:00Z",
                ship_by="2026-11-02T20:59:59Z", units=3, valid=False),
        # shipped the next day
        shipped("sC", "oC", "2026-11-03T09:00:00Z", placed_at="2026-11-02T09:30:00Z",
                ship_by="2026-11-03T10:00:00Z", units=1, deliver_by="2026-11-06T08:00:00Z"),
        returned("rB", "oB", "2026-11-10T16:00:00Z", 1, placed_at="2026-11-02T09:00:00Z"),
    ]

    def setUp(self):
        self.o = Oracle(self.events)

    def test_on_time_ship_rate(self):
        self.assertEqual(self.o.kpi("on_time_ship_rate", S, *DAY), (D(1), D(2)))

    def test_late_shipment_rate(self):
        self.assertEqual(self.o.kpi("late_shipment_rate", S, *DAY), (D(1), D(2)))

    def test_fill_rate_by_order_date(self):
        # units shipped of orders placed on 11-02: sB 3 + sC 1 (shipped on 11-03); ordered 4
        self.assertEqual(self.o.kpi("fill_rate", S, *DAY), (D(4), D(4)))

    def test_return_rate(self):
        self.assertEqual(self.o.kpi("return_rate", S, *DAY), (D(1), D(4)))

    def test_valid_tracking_by_promise(self):
        # on 11-02 only sB is promised (its event time); its tracking is invalid
        self.assertEqual(self.o.kpi("valid_tracking_rate", S, *DAY), (D(0), D(1)))
        nov5 = ("2026-11-05T08:00:00Z", "2026-11-06T08:00:00Z")
        self.assertEqual(self.o.kpi("valid_tracking_rate", S, *nov5), (D(1), D(1)))


def _tracked(eid, oid, units, deliver_by, valid=True):
    return shipped(eid, oid, "2026-10-30T10:00:00Z", "2026-10-29T20:00:00Z", "2026-10-31T07:59:59Z",
                   units=units, deliver_by=deliver_by, valid=valid)


class Deliveries(unittest.TestCase):
    """on_time_delivery_rate: tracked units delivered by the promise / tracked units."""

    events = [
        _tracked("s1", "o1", 2, "2026-11-02T20:00:00Z"),
        _tracked("s2", "o2", 4, "2026-11-02T12:00:00Z"),
        _tracked("s3", "o3", 3, "2026-11-02T12:00:00Z"),
        _tracked("s4", "o4", 5, "2026-11-03T12:00:00Z"),
        _tracked("s5", "o5", 1, "2026-11-02T15:00:00Z"),               # lost: never delivered
        _tracked("s6", "o6", 7, "2026-11-02T15:00:00Z", valid=False),  # not tracked
        delivered("d1", "o1", "2026-11-02T19:00:00Z", "2026-11-02T20:00:00Z", 2),   # early
        delivered("d2", "o2", "2026-11-02T12:00:00Z", "2026-11-02T12:00:00Z", 4),   # exactly on time
        delivered("d3", "o3", "2026-11-03T01:00:00Z", "2026-11-02T12:00:00Z", 3),   # late
        delivered("d4", "o4", "2026-11-02T12:00:00Z", "2026-11-03T12:00:00Z", 5),   # promised 11-03
        delivered("d6", "o6", "2026-11-02T14:00:00Z", "2026-11-02T15:00:00Z", 7),   # untracked: on time
    ]

    def test_on_time_delivery_rate_by_promise(self):
        # promised on 11-02: tracked o1 2 + o2 4 + o3 3 + o5 1 = 10; by the promise: o1 2 + o2 4.
        # o6 was delivered on time, but its 7 units were never tracked: Amazon counts neither side.
        self.assertEqual(compute(self.events, "on_time_delivery_rate", S, *DAY), (D(6), D(10)))


class OncePerOrder(unittest.TestCase):
    """order_defect_rate, negative_feedback_rate, refund_rate count an order once."""

    events = [
        placed("p1", "o1", "2026-11-02T09:00:00Z"),
        placed("p2", "o2", "2026-11-02T09:00:00Z"),
        placed("p3", "o3", "2026-11-02T09:00:00Z"),
        # defects arrive weeks later and are booked on the order date
        defect("f1a", "o1", "2026-11-20T02:00:00Z", "negative_feedback"),
        defect("f1b", "o1", "2026-11-21T02:00:00Z", "chargeback"),
        defect("f2a", "o2", "2026-11-22T02:00:00Z", "a_to_z_claim"),
        defect("f2b", "o2", "2026-11-23T02:00:00Z", "a_to_z_claim"),
        refunded("r1a", "o1", "2026-11-10T02:00:00Z", amount="3.00"),
        refunded("r1b", "o1", "2026-11-11T02:00:00Z", amount="4.00"),   # a second partial refund
        refunded("r2", "o2", "2026-11-12T02:00:00Z", fault=False),
    ]

    def setUp(self):
        self.o = Oracle(self.events)

    def test_order_defect_rate(self):
        self.assertEqual(self.o.kpi("order_defect_rate", S, *DAY), (D(2), D(3)))

    def test_negative_feedback_rate(self):
        self.assertEqual(self.o.kpi("negative_feedback_rate", S, *DAY), (D(1), D(3)))

    def test_refund_rate(self):
        self.assertEqual(self.o.kpi("refund_rate", S, *DAY), (D(2), D(3)))

    def test_nothing_on_the_day_the_defect_arrived(self):
        nov20 = ("2026-11-20T08:00:00Z", "2026-11-21T08:00:00Z")
        self.assertEqual(self.o.kpi("order_defect_rate", S, *nov20), (D(0), D(0)))


class Ads(unittest.TestCase):
    """roas, acos, tacos, cpc, ctr, cvr; newest as_of wins; booked at the Pacific day start."""

    events = [
        # campaign c1 on 11-02: the newer version (as_of 11-04) arrives before the older one
        ad("c1-r2", "c1", "2026-11-02", "2026-11-04T14:00:00Z", "105.40", "402.81", 211, 15230, 19),
        ad("c1-r1", "c1", "2026-11-02", "2026-11-03T10:00:00Z", "100.00", "300.00", 200, 10000, 10),
        ad("c2-r1", "c2", "2026-11-02", "2026-11-03T10:00:00Z", "4.60", "17.19", 9, 770, 1),
        # a row of the next date: 11-03 Pacific starts at 2026-11-03T08:00Z
        ad("c2-d3", "c2", "2026-11-03", "2026-11-04T10:00:00Z", "1.00", "2.00", 3, 40, 0),
        placed("p1", "o1", "2026-11-02T10:00:00Z", "550.00"),
    ]

    def setUp(self):
        self.o = Oracle(self.events)

    def test_roas(self):
        self.assertEqual(self.o.kpi("roas", S, *DAY), (D("420.00"), D("110.00")))

    def test_acos(self):
        self.assertEqual(self.o.kpi("acos", S, *DAY), (D("110.00"), D("420.00")))

    def test_tacos(self):
        self.assertEqual(self.o.kpi("tacos", S, *DAY), (D("110.00"), D("550.00")))

    def test_cpc(self):
        self.assertEqual(self.o.kpi("cpc", S, *DAY), (D("110.00"), D(220)))

    def test_ctr(self):
        self.assertEqual(self.o.kpi("ctr", S, *DAY), (D(220), D(16000)))

    def test_cvr(self):
        self.assertEqual(self.o.kpi("cvr", S, *DAY), (D(20), D(220)))

    def test_campaign_scope(self):
        self.assertEqual(self.o.kpi("roas", dict(S, campaign="c1"), *DAY), (D("402.81"), D("105.40")))

    def test_ad_date_in_business_zone(self):
        # UTC midnight of 11-03 up to the Pacific midnight: the 11-03 row is not there yet
        self.assertEqual(self.o.kpi("cpc", S, "2026-11-03T00:00:00Z", "2026-11-03T08:00:00Z"), (D(0), D(0)))
        self.assertEqual(self.o.kpi("cpc", S, "2026-11-03T08:00:00Z", "2026-11-03T09:00:00Z"), (D("1.00"), D(3)))

    def test_ad_date_in_overridden_zone(self):
        o = Oracle(self.events, tz={"US": "America/New_York"})
        # 2026-11-03 in New York starts at 05:00Z
        self.assertEqual(o.kpi("cpc", S, "2026-11-03T05:00:00Z", "2026-11-03T06:00:00Z"), (D("1.00"), D(3)))


class DstDays(unittest.TestCase):
    """Business days of 25 h (2026-11-01) and 23 h (2026-03-08) in America/Los_Angeles."""

    events = [
        placed("n1", "n1", "2026-11-01T07:00:00Z", "1.00"),    # 00:00 PDT 11-01: first instant
        placed("n2", "n2", "2026-11-02T07:30:00Z", "2.00"),    # 23:30 PST 11-01 (25th hour)
        placed("n3", "n3", "2026-11-02T08:00:00Z", "4.00"),    # 00:00 PST 11-02
        placed("m1", "m1", "2026-03-08T08:00:00Z", "10.00"),   # 00:00 PST 03-08
        placed("m2", "m2", "2026-03-09T06:59:00Z", "20.00"),   # 23:59 PDT 03-08
        placed("m3", "m3", "2026-03-09T07:30:00Z", "40.00"),   # 00:30 PDT 03-09
        snap("i1", "A", "FBA", "2026-03-08T09:00:00Z", 10),
        snap("i2", "A", "FBA", "2026-11-01T09:00:00Z", 24),
    ]
    NOV1 = ("2026-11-01T07:00:00Z", "2026-11-02T08:00:00Z")
    MAR8 = ("2026-03-08T08:00:00Z", "2026-03-09T07:00:00Z")

    def setUp(self):
        self.o = Oracle(self.events)

    def test_25_hour_day(self):
        self.assertEqual(self.o.kpi("gmv", S, *self.NOV1), (D("3.00"), None))

    def test_23_hour_day(self):
        self.assertEqual(self.o.kpi("gmv", S, *self.MAR8), (D("30.00"), None))

    def test_window_days_not_a_finite_decimal(self):
        # sellable 10 x 23/24 day = 115/12
        num, den = self.o.kpi("days_of_cover", S, *self.MAR8)
        self.assertEqual((num, den), (Fraction(115, 12), D(2)))
        self.assertTrue(oracle.same_number(D("9.583333333333"), num))
        self.assertTrue(oracle.same_number(D("9.583333333334"), num))
        self.assertFalse(oracle.same_number(D("9.58"), num))          # too few digits
        self.assertFalse(oracle.same_number(D("9.583333333330"), num))

    def test_window_days_25_hours(self):
        # sellable 24 x 25/24 day = 25; units ordered on 11-01: 2
        self.assertEqual(self.o.kpi("days_of_cover", S, *self.NOV1), (D(25), D(2)))

    def test_calendar_checks(self):
        tz = "America/Los_Angeles"
        ok = {"kind": "business_day", "start": self.NOV1[0], "end": self.NOV1[1], "time_zone": tz}
        self.assertEqual(oracle.check_window(ok, tz), [])
        ok23 = {"kind": "business_day", "start": self.MAR8[0], "end": self.MAR8[1], "time_zone": tz}
        self.assertEqual(oracle.check_window(ok23, tz), [])
        bad = dict(ok, end="2026-11-02T07:00:00Z")          # a 24 h "day" across the change
        self.assertEqual(len(oracle.check_window(bad, tz)), 1)
        utc = dict(ok, start="2026-11-01T00:00:00Z", end="2026-11-02T00:00:00Z", time_zone="UTC")
        self.assertEqual(len(oracle.check_window(utc, tz)), 2)   # wrong zone + not local midnight

    def test_week_and_month_checks(self):
        tz = "America/Los_Angeles"
        week = {"kind": "week", "start": "2026-11-02T08:00:00Z", "end": "2026-11-09T08:00:00Z", "time_zone": tz}
        self.assertEqual(oracle.check_window(week, tz), [])
        sunday = dict(week, start="2026-11-01T07:00:00Z", end="2026-11-08T08:00:00Z")
        self.assertEqual(oracle.check_window(sunday, tz), ["week start 2026-11-01 is not a Monday"])
        month = {"kind": "month", "start": "2026-11-01T07:00:00Z", "end": "2026-12-01T08:00:00Z", "time_zone": tz}
        self.assertEqual(oracle.check_window(month, tz), [])
        dec = {"kind": "month", "start": "2026-12-01T08:00:00Z", "end": "2027-01-01T08:00:00Z", "time_zone": tz}
        self.assertEqual(oracle.check_window(dec, tz), [])
        short = dict(month, end="2026-12-01T07:00:00Z")
        self.assertEqual(len(oracle.check_window(short, tz)), 1)


class Inventory(unittest.TestCase):
    """stockout_rate(_by_sku), days_of_cover, inventory_turnover; carry-forward; current day.

    Pacific days D1 = 11-02, D2 = 11-03, D3 = 11-04, D4 = 11-05 (each 24 h, D1 starts 08:00Z).
    SKU A: FBA 5 on D1; FBA 2 then 0 on D2 (the later one counts); WH first seen on D3 with 0;
           FBA 7 on D4.       Levels: D1 5, D2 0, D3 0 (carried), D4 7+0 = 7.
    SKU B: FBA 4 on D2, never again.  Levels: D2 4, D3 4, D4 4 (carried).
    The shop's newest event is on D4 (an order), so D4 is the last active day.
    """

    events = [
        snap("a1", "A", "FBA", "2026-11-02T18:00:00Z", 5),
        snap("a2", "A", "FBA", "2026-11-03T10:00:00Z", 2),
        snap("a3", "A", "FBA", "2026-11-03T18:00:00Z", 0),
        snap("b1", "B", "FBA", "2026-11-03T12:00:00Z", 4, ),
        snap("w1", "A", "WH", "2026-11-04T18:00:00Z", 0),
        snap("a4", "A", "FBA", "2026-11-05T09:00:00Z", 7),
        placed("p1", "o1", "2026-11-02T20:00:00Z", units=1),
        placed("p2", "o2", "2026-11-05T20:00:00Z", units=3),
        heartbeat("h-other-shop", "2026-11-30T20:00:00Z", shop="s2"),   # does not extend s1
        heartbeat("h-s1", "2026-11-29T20:00:00Z"),   # wall-clock time: does not extend s1 either
    ]
    FOUR_DAYS = ("2026-11-02T08:00:00Z", "2026-11-06T08:00:00Z")
    D2 = ("2026-11-03T08:00:00Z", "2026-11-04T08:00:00Z")
    D5 = ("2026-11-06T08:00:00Z", "2026-11-07T08:00:00Z")

    def setUp(self):
        self.o = Oracle(self.events)

    def test_stockout_rate(self):
        # A: 4 active days, 2 at zero; B: 3 active days, none at zero
        self.assertEqual(self.o.kpi("stockout_rate", S, *self.FOUR_DAYS), (D(2), D(7)))
        self.assertEqual(self.o.kpi("stockout_rate", S, *self.D2), (D(1), D(2)))

    def test_stockout_rate_by_sku(self):
        self.assertEqual(self.o.kpi("stockout_rate_by_sku", dict(S, sku="A"), *self.FOUR_DAYS), (D(2), D(4)))
        self.assertEqual(self.o.kpi("stockout_rate_by_sku", dict(S, sku="B"), *self.FOUR_DAYS), (D(0), D(3)))

    def test_not_active_after_current_day(self):
        self.assertEqual(self.o.kpi("stockout_rate", S, *self.D5), (D(0), D(0)))

    def test_carry_forward_extends_with_newer_events(self):
        o = Oracle(self.events + [placed("p9", "o9", "2026-11-07T09:00:00Z")])   # 11-07 Pacific: D6
        # D5 now active: A 7 (carried), B 4 (carried)
        self.assertEqual(o.kpi("stockout_rate", S, *self.D5), (D(0), D(2)))
        self.assertEqual(o.measure("sellable_unit_days", S, *self.D5), D(11))

    def test_days_of_cover(self):
        # sellable now at 11-06T08:00Z: A/FBA 7 + A/WH 0 + B/FBA 4 = 11; x 4 days; units 1 + 3
        self.assertEqual(self.o.kpi("days_of_cover", S, *self.FOUR_DAYS), (D(44), D(4)))
        # at the end of D2: A/FBA 0, WH not seen yet, B 4; no units ordered on D2
        self.assertEqual(self.o.kpi("days_of_cover", S, *self.D2), (D(4), D(0)))

    def test_inventory_turnover(self):
        # units 4 x 4 days / sellable unit-days (A 5+0+0+7 = 12, B 4+4+4 = 12)
        self.assertEqual(self.o.kpi("inventory_turnover", S, *self.FOUR_DAYS), (D(16), D(24)))


class SellerFulfilled(unittest.TestCase):
    """Marketplace scopes: seller-fulfilled (merchant, third_party) by each fact's own
    `fulfilment`; a fact that does not say counts as seller-fulfilled. Walmart's refund rate:
    seller-fault refunds, WFS orders exempt from both sides."""

    events = [
        placed("pm", "om", "2026-11-02T09:00:00Z", ful="merchant"),
        placed("pt", "ot", "2026-11-02T09:00:00Z", ful="third_party"),
        placed("pf", "of", "2026-11-02T09:00:00Z", ful="fba"),
        # om: shipped two days later, late; its ship_by is on 11-02
        shipped("sm", "om", "2026-11-04T10:00:00Z", "2026-11-02T09:00:00Z", "2026-11-02T20:00:00Z",
                units=2, deliver_by="2026-11-02T23:00:00Z", valid=True, ful="merchant"),
        shipped("st", "ot", "2026-11-02T10:00:00Z", "2026-11-02T09:00:00Z", "2026-11-02T12:00:00Z",
                units=1, valid=False, ful="third_party"),
        shipped("sf", "of", "2026-11-02T11:00:00Z", "2026-11-02T09:00:00Z", "2026-11-02T12:00:00Z",
                ful="fba"),
        # ox: its source does not say how it is fulfilled -> counts as seller-fulfilled; late
        shipped("sx", "ox", "2026-11-02T13:00:00Z", "2026-11-02T09:00:00Z", "2026-11-02T12:00:00Z"),
        delivered("dm", "om", "2026-11-02T22:00:00Z", "2026-11-02T23:00:00Z", 2, ful="merchant"),
        delivered("dt", "ot", "2026-11-03T02:00:00Z", "2026-11-02T23:00:00Z", 1, ful="third_party"),
        delivered("df", "of", "2026-11-02T22:00:00Z", "2026-11-02T23:00:00Z", 1, ful="fba"),
        cancelled("cm", "om", "2026-11-02T10:00:00Z", "seller", ful="merchant"),
        cancelled("cf", "of", "2026-11-02T10:00:00Z", "seller", ful="fba"),
        # Walmart orders of the same shop
        placed("pw1", "w-wfs", "2026-11-02T09:00:00Z", ful="wfs", channel="walmart"),
        placed("pw2", "w-m", "2026-11-02T09:00:00Z", ful="merchant", channel="walmart"),
        placed("pw3", "w-t", "2026-11-02T09:00:00Z", ful="third_party", channel="walmart"),
        refunded("rw1", "w-wfs", "2026-11-05T10:00:00Z", fault=True, ful="wfs", channel="walmart"),
        refunded("rw2", "w-m", "2026-11-05T10:00:00Z", fault=False, ful="merchant", channel="walmart"),
        refunded("rw3", "w-t", "2026-11-05T10:00:00Z", fault=True, ful="third_party", channel="walmart"),
        refunded("rw4", "w-t", "2026-11-06T10:00:00Z", fault=True, ful="third_party", channel="walmart"),
        refunded("rw5", "w-x", "2026-11-05T10:00:00Z", fault=True, channel="walmart"),   # unknown
    ]

    def setUp(self):
        self.o = Oracle(self.events)

    def test_seller_fulfilled_by_the_fact(self):
        self.assertIs(Oracle.seller_fulfilled({"fulfilment": "merchant"}), True)
        self.assertIs(Oracle.seller_fulfilled({"fulfilment": "third_party"}), True)
        self.assertIs(Oracle.seller_fulfilled({"fulfilment": "fba"}), False)
        self.assertIs(Oracle.seller_fulfilled({"fulfilment": "fbt"}), False)
        self.assertIs(Oracle.seller_fulfilled({}), True)

    def test_late_shipment_rate_by_ship_by(self):
        # due on 11-02, seller-fulfilled: sm (late, shipped 11-04), st (on time), sx (late)
        self.assertEqual(self.o.kpi("late_shipment_rate", S, *DAY), (D(2), D(3)))
        # nothing is booked on 11-04, the day sm shipped
        nov4 = ("2026-11-04T08:00:00Z", "2026-11-05T08:00:00Z")
        self.assertEqual(self.o.kpi("late_shipment_rate", S, *nov4), (D(0), D(0)))

    def test_on_time_ship_rate(self):
        self.assertEqual(self.o.kpi("on_time_ship_rate", S, *DAY), (D(1), D(3)))

    def test_cancellation_rate(self):
        # cm (merchant) / orders pm, pt; cf and pf are FBA
        self.assertEqual(self.o.kpi("cancellation_rate", S, *DAY), (D(1), D(2)))

    def test_valid_tracking_rate(self):
        # promised on 11-02: sm (23:00Z, valid), st (no promise: ship time, invalid), sx (valid)
        self.assertEqual(self.o.kpi("valid_tracking_rate", S, *DAY), (D(2), D(3)))

    def test_on_time_delivery_rate(self):
        # tracked units: sm 2 (st invalid, sx no promise, sf FBA); dm delivers them on time
        self.assertEqual(self.o.kpi("on_time_delivery_rate", S, *DAY), (D(2), D(2)))

    def test_walmart_refund_rate(self):
        # seller-fault refunds of non-WFS orders: w-t (twice, one order), w-x (not known to be
        # WFS) / non-WFS orders w-m, w-t
        self.assertEqual(self.o.kpi("refund_rate", WM, *DAY), (D(2), D(2)))

    def test_other_channels_count_every_refund(self):
        self.assertEqual(self.o.kpi("refund_rate", S, *DAY), (D(0), D(3)))


def _write(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")


def update(kpi, num, den, rev, start=DAY[0], end=DAY[1], kind="business_day", name="business_day",
           tz="America/Los_Angeles", scope=S):
    u = {"kpi": kpi, "kpi_version": 1, "unit": "count", "direction": "higher_is_better",
         "owner": "ops", "priority": "core", "scope": scope,
         "window": {"kind": kind, "name": name, "start": start, "end": end, "time_zone": tz,
                    "basis": "placed"},
         "numerator": num, "revision": rev, "watermark": end, "emitted_at": end}
    if den is not ...:
        u["denominator"] = den
    return u


class Cli(unittest.TestCase):
    events = SumsAndCounts.events

    def run_cli(self, updates, *extra, events=None):
        with tempfile.TemporaryDirectory() as d:
            ep, up, rp = (os.path.join(d, n) for n in ("e.jsonl", "u.jsonl", "r.json"))
            _write(ep, self.events if events is None else events)
            _write(up, updates)
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = oracle.main(["--events", ep, "--updates", up, "--report", rp, *extra])
                except SystemExit as e:
                    code = e.code
            report = None
            if os.path.exists(rp):
                with open(rp, encoding="utf-8") as f:
                    report = json.load(f)
        return code, out.getvalue(), err.getvalue(), report

    def test_agree_highest_revision_counts(self):
        code, out, _, rep = self.run_cli([
            update("gmv", "1.00", None, 1),            # stale revision, wrong
            update("gmv", "30.0000", ..., 2),          # current: trailing zeros, no denominator
            update("aov", "30", "2.0", 5),
        ])
        self.assertEqual(code, 0, out)
        self.assertEqual(rep["per_kpi"]["gmv"], {"compared": 1, "agreeing": 1, "differing": 0})
        self.assertEqual(rep["per_kpi"]["aov"], {"compared": 1, "agreeing": 1, "differing": 0})

    def test_difference_exit_1(self):
        code, out, _, rep = self.run_cli([update("orders", "3", None, 1), update("aov", "30.00", "3", 1)])
        self.assertEqual(code, 1)
        self.assertEqual(len(rep["differences"]), 2)
        d = rep["differences"][0]
        self.assertEqual((d["streamed"]["numerator"], d["oracle"]["numerator"]), ("3", "2"))
        self.assertIn("orders", out)

    def test_denominator_given_for_a_count_differs(self):
        code, _, _, rep = self.run_cli([update("orders", "2", "1", 1)])
        self.assertEqual(code, 1)
        self.assertEqual(rep["differences"][0]["problems"], ["denominator"])

    def test_window_zone_checked(self):
        code, _, _, rep = self.run_cli([update("orders", "2", None, 1, tz="UTC")])
        self.assertEqual(code, 1)
        self.assertIn("time_zone", rep["differences"][0]["problems"][0])

    def test_kpis_filter(self):
        code, out, _, rep = self.run_cli([update("orders", "3", None, 1), update("gmv", "30", None, 1)],
                                         "--kpis", "gmv")
        self.assertEqual(code, 0)
        self.assertEqual(list(rep["per_kpi"]), ["gmv"])
        self.assertEqual(rep["skipped"], {"orders": 1})

    def test_unknown_kpi_exit_2(self):
        code, _, err, _ = self.run_cli([update("gmv", "30", None, 1)], "--kpis", "gmv,bogus_rate")
        self.assertEqual(code, 2)
        self.assertIn("bogus_rate", err)

    def test_bad_events_exit_2(self):
        code, _, _, _ = self.run_cli([update("gmv", "30", None, 1)], events=["{not json"])
        self.assertEqual(code, 2)

    def test_bad_numerator_exit_2(self):
        code, _, _, _ = self.run_cli([update("gmv", 30, None, 1)])
        self.assertEqual(code, 2)

    def test_refused_flag(self):
        with tempfile.TemporaryDirectory() as d:
            rf = os.path.join(d, "refused.txt")
            _write(rf, ["# refused by the processor", "p2"])
            code, _, _, _ = self.run_cli([update("gmv", "25.98", None, 1)], "--refused", rf)
        self.assertEqual(code, 0)


class Fixtures(unittest.TestCase):
    """The hand-written smoke fixtures in fixtures/ agree (and the wrong copy does not)."""

    def run_fixture(self, updates):
        f = os.path.join(HERE, "fixtures")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            return oracle.main(["--events", os.path.join(f, "events.jsonl"),
                                "--updates", os.path.join(f, updates),
                                "--refused", os.path.join(f, "refused.txt")]), out.getvalue()

    def test_smoke_agrees(self):
        code, out = self.run_fixture("updates.jsonl")
        self.assertEqual(code, 0, out)

    def test_smoke_wrong(self):
        code, out = self.run_fixture("updates_wrong.jsonl")
        self.assertEqual(code, 1, out)


if __name__ == "__main__":
    unittest.main()
