"""What the ORM lacks for our queries."""

from django.db.models import F
from django.db.models.lookups import In


class AnyOf(In):
    """`column IN (ids)` for a long list of integer ids. On PostgreSQL it is one parameter, the
    array's text, `column = ANY('{1,2,3}'::bigint[])`. Django's `__in` compiles, sends and has
    PostgreSQL plan one parameter per id (a change feed's rows by 1,000 ids took 8 ms that way,
    4 ms as an array). psycopg2 sends a Python list as `ARRAY[1,2,3]`, built element by element
    (23 ms for the sweep's 10,000 ids) and planned by PostgreSQL as one constant per element;
    as text, 10,000 ids cost 25 ms a statement instead of 78 and 1,000 ids 4.2 ms instead of
    9.4 (bench/analysis.md, issue 22). The plan is the same index probe: PostgreSQL turns an
    IN list into `= ANY` itself. Elsewhere (SQLite) it is Django's `__in`."""

    lookup_name = "any_of"

    def get_prep_lookup(self):
        return [int(value) for value in self.rhs]  # ids only: nothing else goes through this

    def as_postgresql(self, compiler, connection):
        column, params = self.process_lhs(compiler, connection)
        array_literal = "{" + ",".join(map(str, self.rhs)) + "}"
        return f"{column} = ANY(%s::bigint[])", (*params, array_literal)


def ids_in(column: str, ids) -> AnyOf:
    """A filter: `column` is one of `ids` (`User.objects.filter(ids_in("pk", ids))`)."""
    return AnyOf(F(column), list(ids))
