#!/usr/bin/env python3
"""Writes a synthetic bank-marketing-like data set for the jobs example.

The columns are those of the book's bank marketing data (UCI "Bank Marketing"):
age, job, marital, education, default, balance, housing, loan, contact, day,
month, duration, campaign, pdays, previous, poutcome, y. The values are made up,
from a fixed seed, with a learnable relation: a longer last call, a past success,
no housing loan and a student or retired client make "yes" more likely.

    python3 examples/jobs/make_bank.py [--rows 4000] [--new 500] [--out DIR]

writes DIR/bank.csv (with y, for training) and DIR/new.csv (an id column and no
y, for scoring). Standard library only.
"""

import argparse
import csv
import math
import os
import random

JOBS = ["admin.", "blue-collar", "entrepreneur", "housemaid", "management", "retired",
        "self-employed", "services", "student", "technician", "unemployed", "unknown"]
MARITAL = ["divorced", "married", "single"]
EDUCATION = ["primary", "secondary", "tertiary", "unknown"]
YES_NO = ["no", "yes"]
CONTACT = ["cellular", "telephone", "unknown"]
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
POUTCOME = ["failure", "other", "success", "unknown"]

COLUMNS = ["age", "job", "marital", "education", "default", "balance", "housing", "loan",
           "contact", "day", "month", "duration", "campaign", "pdays", "previous",
           "poutcome", "y"]


def row(rng):
    age = max(18, min(95, int(rng.gauss(41, 10))))
    job = rng.choices(JOBS, weights=[11, 21, 3, 3, 21, 5, 3, 9, 2, 17, 3, 1])[0]
    if age > 60 and rng.random() < 0.6:
        job = "retired"
    marital = rng.choices(MARITAL, weights=[12, 60, 28])[0]
    education = rng.choices(EDUCATION, weights=[15, 51, 30, 4])[0]
    default = rng.choices(YES_NO, weights=[98, 2])[0]
    balance = int(rng.lognormvariate(6.5, 1.4)) - 300
    housing = rng.choices(YES_NO, weights=[44, 56])[0]
    loan = rng.choices(YES_NO, weights=[84, 16])[0]
    contact = rng.choices(CONTACT, weights=[65, 6, 29])[0]
    day = rng.randint(1, 31)
    month = rng.choices(MONTHS, weights=[3, 6, 1, 6, 30, 12, 15, 14, 1, 2, 9, 1])[0]
    duration = int(rng.expovariate(1 / 250)) + 5
    campaign = 1 + int(rng.expovariate(1 / 1.8))
    if rng.random() < 0.8:
        pdays, previous, poutcome = -1, 0, "unknown"
    else:
        pdays = rng.randint(1, 400)
        previous = 1 + int(rng.expovariate(1 / 1.5))
        poutcome = rng.choices(["failure", "other", "success"], weights=[55, 20, 25])[0]
    z = (-3.2 + 0.006 * duration + 2.2 * (poutcome == "success") - 0.8 * (housing == "yes")
         - 0.5 * (loan == "yes") + 0.9 * (job in ("student", "retired"))
         + 0.6 * (contact == "cellular") - 0.12 * (campaign - 1) + 0.00005 * balance)
    y = "yes" if rng.random() < 1 / (1 + math.exp(-z)) else "no"
    return [age, job, marital, education, default, balance, housing, loan, contact, day,
            month, duration, campaign, pdays, previous, poutcome, y]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--new", type=int, default=500)
    parser.add_argument("--out", default=".")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bank.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for _ in range(args.rows):
            w.writerow(row(rng))
    with open(os.path.join(args.out, "new.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id"] + COLUMNS[:-1])
        for i in range(args.new):
            w.writerow([f"c{i:05d}"] + row(rng)[:-1])
    print(f"wrote {args.rows} rows to bank.csv and {args.new} to new.csv in {args.out}")


if __name__ == "__main__":
    main()
