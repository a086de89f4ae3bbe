"""What the ORM lacks for our queries."""

from django.db.models import F
from django.db.models.lookups import In


class AnyOf(In):
    """`column IN (ids)` for a long list of integer ids. On PostgreSQL it is one array
    parameter, `column = ANY(%s)`: Django's `__in` compiles, sends and has PostgreSQL plan one
    parameter per id, and a change feed's rows by 1,000 ids took 8 ms that way, 4 ms this way
    (bench/analysis.md, issue 22); the sweep closes 9,000 intervals by id. The plan is the same
    index probe: PostgreSQL turns an IN list into `= ANY` itself. Elsewhere (SQLite) it is
    Django's `__in`."""

    lookup_name = "any_of"

    def get_prep_lookup(self):
        return [int(value) for value in self.rhs]  # ids only: nothing else goes through this

    def as_postgresql(self, compiler, connection):
        column, params = self.process_lhs(compiler, connection)
        return f"{column} = ANY(%s)", (*params, self.rhs)


def ids_in(column: str, ids) -> AnyOf:
    """A filter: `column` is one of `ids` (`User.objects.filter(ids_in("pk", ids))`)."""
    return AnyOf(F(column), list(ids))
