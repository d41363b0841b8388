"""Realistic bench data: contacts with Turkish names, emails and phones in mixed formats, birthdays
spread over the year, consents (70% email ONAY, 50% SMS ONAY, 10% of them later withdrawn) and
purchase events. Writes the three CSVs izin imports.

    python scripts/bench/generate.py --contacts 100000 --out /tmp/bench
"""

from __future__ import annotations

import argparse
import csv
import random
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

FIRST = ["Ayşe", "Mehmet", "Zeynep", "Mustafa", "Elif", "Ahmet", "Fatma", "Emre", "Şule", "Ömer", "Gülşen",
         "İbrahim", "Çağla", "Burak", "Özge", "Hüseyin", "Merve", "Can", "Deniz", "Ebru"]
LAST = ["Yılmaz", "Kaya", "Demir", "Şahin", "Çelik", "Yıldız", "Öztürk", "Aydın", "Arslan", "Doğan", "Kılıç",
        "Aslan", "Çetin", "Koç", "Kurt", "Özdemir", "Polat", "Erdoğan", "Güneş", "Akın"]
CITIES = ["İstanbul", "Ankara", "İzmir", "Bursa", "Antalya", "Konya", "Eskişehir", "Trabzon"]
ASCII = str.maketrans("çğıöşüÇĞİÖŞÜ", "cgiosuCGIOSU")


def phone(rng: random.Random, i: int) -> str:
    digits = f"5{rng.choice('0345')}{i % 10}{i:07d}"[:10]
    style = i % 4
    if style == 0:
        return f"0{digits[:3]} {digits[3:6]} {digits[6:8]} {digits[8:]}"
    if style == 1:
        return f"+90 ({digits[:3]}) {digits[3:6]} {digits[6:]}"
    if style == 2:
        return f"0{digits}"
    return f"+90{digits}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--events-per-contact", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=Path("bench-data"))
    parser.add_argument("--seed", type=int, default=6563)
    parser.add_argument("--email-onay", type=float, default=0.7, help="share of contacts with an email ONAY")
    parser.add_argument("--sms-onay", type=float, default=0.5, help="share of contacts with an SMS ONAY")
    parser.add_argument("--withdrawn", type=float, default=0.1, help="share of those ONAYs later withdrawn")
    parser.add_argument("--first-id", type=int, default=0, help="number of the first contact (C0000000)")
    parser.add_argument("--wave", type=int, default=2_000, help="contacts C0000000... with the attribute wave=1")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    # purchases over the 320 days before the benchmark's instant, so a follow-up tick finds a day's worth
    last_purchase = datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc)
    with (args.out / "contacts.csv").open("w", newline="", encoding="utf-8") as c, \
         (args.out / "consents.csv").open("w", newline="", encoding="utf-8") as k, \
         (args.out / "events.csv").open("w", newline="", encoding="utf-8") as e:
        contacts, consents, events = csv.writer(c), csv.writer(k), csv.writer(e)
        contacts.writerow(["external_id", "first_name", "last_name", "email", "phone", "birthday", "locale", "tags",
                           "city", "total_spent", "wave"])
        consents.writerow(["external_id", "channel", "status", "source", "consent_date", "proof"])
        events.writerow(["external_id", "event", "occurred_at", "event_id", "order_total"])
        for i in range(args.first_id, args.first_id + args.contacts):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            eid = f"C{i:07d}"
            email = f"{first.translate(ASCII).lower()}.{last.translate(ASCII).lower()}{i}@example.com"
            born = date(1950, 1, 1) + timedelta(days=rng.randrange(365 * 55))
            contacts.writerow([eid, first, last, email.upper() if i % 7 == 0 else email, phone(rng, i),
                               born.isoformat(), "en" if i % 20 == 0 else "tr", "vip" if i % 10 == 0 else "",
                               rng.choice(CITIES), f"{rng.randrange(50, 20000)}.{rng.randrange(100):02d}",
                               # the first contacts form a fixed audience, the same at every base size
                               1 if i < args.wave else 0])
            for channel, share in (("email", args.email_onay), ("sms", args.sms_onay)):
                if rng.random() < share:
                    given = start + timedelta(minutes=rng.randrange(60 * 24 * 300))
                    consents.writerow([eid, channel, "ONAY", "HS_WEB", given.isoformat(), '{"form":"bench"}'])
                    if rng.random() < args.withdrawn:
                        consents.writerow([eid, channel, "RET", "HS_WEB",
                                           (given + timedelta(days=rng.randrange(1, 30))).isoformat(), ""])
            # 0 to 2x the mean per contact, so the file has contacts × mean events in all
            for n in range(rng.randint(0, round(2 * args.events_per_contact))):
                when = last_purchase - timedelta(minutes=rng.randrange(60 * 24 * 320))
                events.writerow([eid, "purchase", when.isoformat(), f"O{i:07d}-{n}", rng.randrange(100, 5000)])
    print(f"wrote {args.contacts} contacts to {args.out}")


if __name__ == "__main__":
    main()
