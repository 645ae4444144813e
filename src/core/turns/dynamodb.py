"""The DynamoDB TurnLog: in the sessions table, under the session's partition.

Items (pk = session id):
- header `t#<turn>#~`: state, lease_until, stop, end, expires_at
- one batch per flush `t#<turn>#b#<position of its last event, 10 digits>`: first, events (JSON)
- idempotency claims: pk `idem#<key>`, sk `idem`, value, expires_at

"~" sorts after "b", so one consistent Query `sk BETWEEN t#<turn>#b#<after + 1> AND t#<turn>#~`
returns the batches holding events after a position, then the header. Turn ids are
time-ordered, so the newest header is the last `t#` key. Items carry `expires_at`; moto (and
DynamoDB until it deletes them) keep expired items, so reads filter them out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from core.aws.dynamodb import TTL_ATTRIBUTE, DynamoDBTable
from core.aws.failures import AwsError
from core.sessions.rules import expires_at
from core.turns.codec import dump_events, load_events
from core.turns.log import Encoded, TurnLost, TurnRead, TurnRecord, TurnState

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef, QueryInputTypeDef

    Item = dict[str, AttributeValueTypeDef]

TURN_PREFIX = "t#"
CLAIM_SK = "idem"


def header_sk(turn_id: str) -> str:
    return f"{TURN_PREFIX}{turn_id}#~"


def batch_sk(turn_id: str, last: int) -> str:
    return f"{TURN_PREFIX}{turn_id}#b#{last:010d}"


class DynamoDBTurnLog:
    """Shares the sessions' table, client and retry policy (every call off the loop)."""

    def __init__(self, table: DynamoDBTable, *, ttl_seconds: float = 3600) -> None:
        self._table = table.name
        self._call = table.call
        self._ttl = ttl_seconds

    def _key(self, session_id: str, turn_id: str) -> Item:
        return {"pk": {"S": session_id}, "sk": {"S": header_sk(turn_id)}}

    async def open(
        self, session_id: str, turn_id: str, *, now: float, lease_seconds: float
    ) -> None:
        item: Item = {
            **self._key(session_id, turn_id),
            "state": {"S": "running"},
            "lease_until": {"N": _number(now + lease_seconds)},
            "stop": {"BOOL": False},
            TTL_ATTRIBUTE: {"N": str(expires_at(now, self._ttl))},
        }
        await self._call(lambda c: c.put_item(TableName=self._table, Item=item))

    async def append(
        self,
        session_id: str,
        turn_id: str,
        first: int,
        events: Sequence[Encoded],
        *,
        now: float,
        lease_seconds: float,
        final: bool = False,
    ) -> bool:
        expiry = str(expires_at(now, self._ttl))
        last = first + len(events) - 1
        if events:
            batch: Item = {
                "pk": {"S": session_id},
                "sk": {"S": batch_sk(turn_id, last)},
                "first": {"N": str(first)},
                "events": {"S": dump_events(list(events))},
                TTL_ATTRIBUTE: {"N": expiry},
            }
            await self._call(lambda c: c.put_item(TableName=self._table, Item=batch))
        values: dict[str, AttributeValueTypeDef] = {
            ":lease": {"N": _number(now + lease_seconds)},
            ":exp": {"N": expiry},
            ":now": {"N": _number(now)},
            ":running": {"S": "running"},
        }
        update = "SET lease_until = :lease, expires_at = :exp"
        if final:
            update += ", #st = :finished, #end = :end"
            values[":finished"] = {"S": "finished"}
            values[":end"] = {"N": str(last)}
        try:
            # Conditional: a turn declared lost stays lost; its producer learns it here.
            answer = await self._call(
                lambda c: c.update_item(
                    TableName=self._table,
                    Key=self._key(session_id, turn_id),
                    UpdateExpression=update,
                    ConditionExpression="#st = :running AND expires_at > :now",
                    ExpressionAttributeNames={"#st": "state", "#end": "end"}
                    if final
                    else {"#st": "state"},
                    ExpressionAttributeValues=values,
                    ReturnValues="ALL_NEW",
                )
            )
        except AwsError as exc:
            raise TurnLost(turn_id) from exc
        return bool(answer.get("Attributes", {}).get("stop", {}).get("BOOL", False))

    async def read(
        self, session_id: str, turn_id: str, *, after: int, now: float
    ) -> TurnRead | None:
        items = await self._query(
            {
                "TableName": self._table,
                "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
                "ExpressionAttributeValues": {
                    ":pk": {"S": session_id},
                    ":lo": {"S": batch_sk(turn_id, after + 1)},
                    ":hi": {"S": header_sk(turn_id)},
                },
                "ConsistentRead": True,
            }
        )
        if not items or items[-1]["sk"]["S"] != header_sk(turn_id):
            return None
        header = items[-1]
        if float(header[TTL_ATTRIBUTE]["N"]) <= now:
            return None
        events: list[tuple[int, Encoded]] = []
        for item in items[:-1]:
            if float(item[TTL_ATTRIBUTE]["N"]) <= now:
                continue
            first = int(item["first"]["N"])
            for i, event in enumerate(load_events(item["events"]["S"])):
                if first + i > after:
                    events.append((first + i, event))
        return TurnRead(_record(session_id, turn_id, header), events)

    async def latest(self, session_id: str, *, now: float) -> TurnRecord | None:
        answer = await self._call(
            lambda c: c.query(
                TableName=self._table,
                KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
                ExpressionAttributeValues={
                    ":pk": {"S": session_id},
                    ":lo": {"S": TURN_PREFIX},
                    ":hi": {"S": f"{TURN_PREFIX}~"},
                },
                ScanIndexForward=False,
                Limit=1,
                ConsistentRead=True,
            )
        )
        items = answer.get("Items", [])
        if not items or float(items[0][TTL_ATTRIBUTE]["N"]) <= now:
            return None
        sk = items[0]["sk"]["S"]
        return _record(session_id, sk[len(TURN_PREFIX) : -2], items[0])

    async def request_stop(self, session_id: str, turn_id: str, *, now: float) -> bool:
        return await self._conditional_update(
            session_id,
            turn_id,
            "SET #stop = :true",
            "#st = :running AND expires_at > :now",
            {"#stop": "stop", "#st": "state"},
            {":true": {"BOOL": True}, ":running": {"S": "running"}, ":now": {"N": _number(now)}},
        )

    async def declare_lost(self, session_id: str, turn_id: str, *, now: float, end: int) -> bool:
        # Conditional: one winner, and never a producer that renewed its lease meanwhile.
        return await self._conditional_update(
            session_id,
            turn_id,
            "SET #st = :lost, #end = :end",
            "#st = :running AND lease_until < :now AND expires_at > :now",
            {"#st": "state", "#end": "end"},
            {
                ":lost": {"S": "lost"},
                ":end": {"N": str(end)},
                ":running": {"S": "running"},
                ":now": {"N": _number(now)},
            },
        )

    async def _conditional_update(
        self,
        session_id: str,
        turn_id: str,
        update: str,
        condition: str,
        names: dict[str, str],
        values: dict[str, AttributeValueTypeDef],
    ) -> bool:
        try:
            await self._call(
                lambda c: c.update_item(
                    TableName=self._table,
                    Key=self._key(session_id, turn_id),
                    UpdateExpression=update,
                    ConditionExpression=condition,
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values,
                )
            )
        except AwsError:
            return False
        return True

    def _claim_key(self, key: str) -> Item:
        return {"pk": {"S": f"idem#{key}"}, "sk": {"S": CLAIM_SK}}

    async def claim(self, key: str, value: str, *, now: float, ttl_seconds: float) -> str | None:
        item: Item = {
            **self._claim_key(key),
            "value": {"S": value},
            TTL_ATTRIBUTE: {"N": str(int(now + ttl_seconds) + 1)},
        }
        for _ in range(2):
            try:
                await self._call(
                    lambda c: c.put_item(
                        TableName=self._table,
                        Item=item,
                        ConditionExpression="attribute_not_exists(pk) OR expires_at <= :now",
                        ExpressionAttributeValues={":now": {"N": _number(now)}},
                    )
                )
                return None
            except AwsError:
                answer = await self._call(
                    lambda c: c.get_item(
                        TableName=self._table, Key=self._claim_key(key), ConsistentRead=True
                    )
                )
                held = answer.get("Item")
                if held is not None and float(held[TTL_ATTRIBUTE]["N"]) > now:
                    return held["value"]["S"]
        return None

    async def release(self, key: str, value: str) -> None:
        try:
            await self._call(
                lambda c: c.delete_item(
                    TableName=self._table,
                    Key=self._claim_key(key),
                    ConditionExpression="#v = :v",
                    ExpressionAttributeNames={"#v": "value"},
                    ExpressionAttributeValues={":v": {"S": value}},
                )
            )
        except AwsError:
            return

    async def _query(self, request: QueryInputTypeDef) -> list[Item]:
        items: list[Item] = []
        while True:
            answer = await self._call(lambda c: c.query(**request))
            items.extend(answer.get("Items", []))
            start = answer.get("LastEvaluatedKey")
            if not start:
                return items
            request["ExclusiveStartKey"] = start

    async def aclose(self) -> None:
        return None  # the table (and its client) is the composition root's to close


def _record(session_id: str, turn_id: str, item: Item) -> TurnRecord:
    end = item.get("end")
    return TurnRecord(
        session_id,
        turn_id,
        cast(TurnState, item["state"]["S"]),
        float(item["lease_until"]["N"]),
        bool(item.get("stop", {}).get("BOOL", False)),
        None if end is None else int(end["N"]),
    )


def _number(value: float) -> str:
    return repr(float(value))
