"""Ledger rules held by the database, and the chart of accounts.

On PostgreSQL: a deferred constraint trigger refuses, at commit, a journal
entry whose postings do not sum to zero per currency; other triggers refuse
any UPDATE or DELETE of entries and postings (they are immutable). SQLite
has no deferred triggers; there the posting service checks the balance.
"""

from django.db import migrations

BALANCE_FUNCTION = """
CREATE FUNCTION financing_entry_balanced() RETURNS trigger AS $$
DECLARE
    unbalanced RECORD;
BEGIN
    SELECT currency, SUM(amount) AS total INTO unbalanced
    FROM financing_posting WHERE entry_id = NEW.entry_id
    GROUP BY currency HAVING SUM(amount) <> 0 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal entry % does not balance: % % left over',
            NEW.entry_id, unbalanced.total, unbalanced.currency
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
"""
BALANCE_TRIGGER = """
CREATE CONSTRAINT TRIGGER financing_posting_balanced
AFTER INSERT ON financing_posting
DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW EXECUTE FUNCTION financing_entry_balanced();
"""
IMMUTABLE_FUNCTION = """
CREATE FUNCTION financing_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% rows are immutable: post a reversing entry instead', TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END $$ LANGUAGE plpgsql;
"""
IMMUTABLE_TRIGGERS = """
CREATE TRIGGER financing_posting_immutable BEFORE UPDATE OR DELETE ON financing_posting
FOR EACH ROW EXECUTE FUNCTION financing_immutable();
CREATE TRIGGER financing_journalentry_immutable BEFORE UPDATE OR DELETE ON financing_journalentry
FOR EACH ROW EXECUTE FUNCTION financing_immutable();
"""
DROP = """
DROP TRIGGER IF EXISTS financing_journalentry_immutable ON financing_journalentry;
DROP TRIGGER IF EXISTS financing_posting_immutable ON financing_posting;
DROP FUNCTION IF EXISTS financing_immutable();
DROP TRIGGER IF EXISTS financing_posting_balanced ON financing_posting;
DROP FUNCTION IF EXISTS financing_entry_balanced();
"""


def add_rules(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for sql in (BALANCE_FUNCTION, BALANCE_TRIGGER, IMMUTABLE_FUNCTION, IMMUTABLE_TRIGGERS):
            schema_editor.execute(sql, params=None)


def drop_rules(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


def add_chart(apps, schema_editor):
    from financing.chart_of_accounts import SYSTEM_ACCOUNTS

    LedgerAccount = apps.get_model("financing", "LedgerAccount")
    for code, name, kind in SYSTEM_ACCOUNTS:
        LedgerAccount.objects.update_or_create(code=code, defaults={"name": name, "kind": kind})


class Migration(migrations.Migration):
    dependencies = [("financing", "0001_ledger")]

    operations = [
        migrations.RunPython(add_rules, drop_rules),
        migrations.RunPython(add_chart, migrations.RunPython.noop),
    ]
