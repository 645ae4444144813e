"""Per-client and global counters in the DynamoDB table, so every Lambda instance shares them.

The same table as the sessions (its own `rate#...` partitions), reached through the shared
`DynamoDBTable`; the counting rules are core.quota.port's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.aws.dynamodb import DynamoDBTable
from core.aws.failures import AwsError
from core.errors import StoreError
from core.quota.port import (
    DAY,
    EVERYONE,
    MINUTE,
    check_daily_tokens,
    check_global_tokens,
    check_request_count,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

    Item = dict[str, AttributeValueTypeDef]


class DynamoDBRateLimiter:
    """Per-client counters in the sessions table, so every Lambda instance shares them.

    Items: pk = "rate#<client>", sk = "w#<minute>" (requests) or "d#<day>" (tokens), with the
    table's TTL attribute; the global daily budget counts under the client "*". A request is
    one conditional `ADD`: atomic, no read first; the condition refuses it without counting
    when the window is full.
    """

    def __init__(
        self,
        table: DynamoDBTable,
        *,
        per_minute: int,
        daily_tokens: int,
        global_daily_tokens: int = 0,
    ) -> None:
        self._table = table
        self._per_minute = per_minute
        self._daily_tokens = daily_tokens
        self._global_tokens = global_daily_tokens

    def _key(self, client: str, sk: str) -> Item:
        return {"pk": {"S": f"rate#{client}"}, "sk": {"S": sk}}

    async def _tokens_used(self, client: str, day: int) -> int:
        key = self._key(client, f"d#{day}")
        table = self._table.name
        item = await self._table.call(
            lambda c: c.get_item(TableName=table, Key=key, ConsistentRead=True)
        )
        return int(item.get("Item", {}).get("tokens", {}).get("N", "0"))

    async def hit(self, client: str, *, now: float) -> None:

        table = self._table.name
        day = int(now // DAY)
        if self._global_tokens:
            used = await self._tokens_used(EVERYONE, day)
            check_global_tokens(used, self._global_tokens, now)
        if self._daily_tokens:
            check_daily_tokens(await self._tokens_used(client, day), self._daily_tokens, now)
        if not self._per_minute:
            return
        minute = int(now // MINUTE)
        key = self._key(client, f"w#{minute}")
        try:
            await self._table.call(
                lambda c: c.update_item(
                    TableName=table,
                    Key=key,
                    UpdateExpression="ADD #n :one SET expires_at = :exp",
                    ConditionExpression="attribute_not_exists(#n) OR #n < :limit",
                    ExpressionAttributeNames={"#n": "count"},
                    ExpressionAttributeValues={
                        ":one": {"N": "1"},
                        ":limit": {"N": str(self._per_minute)},
                        ":exp": {"N": str((minute + 2) * MINUTE)},
                    },
                )
            )
        except AwsError as exc:
            if exc.code != "ConditionalCheckFailedException":
                raise StoreError("rate limiter failed") from exc
            check_request_count(self._per_minute + 1, self._per_minute, now)

    async def spend(self, client: str, tokens: int, *, now: float) -> None:

        if tokens <= 0:
            return
        day = int(now // DAY)
        table = self._table.name
        for name, quota in ((client, self._daily_tokens), (EVERYONE, self._global_tokens)):
            if not quota:
                continue
            key = self._key(name, f"d#{day}")
            await self._table.call(
                lambda c, key=key: c.update_item(  # type: ignore[misc]
                    TableName=table,
                    Key=key,
                    UpdateExpression="ADD tokens :t SET expires_at = :exp",
                    ExpressionAttributeValues={
                        ":t": {"N": str(tokens)},
                        ":exp": {"N": str((day + 2) * DAY)},
                    },
                )
            )
