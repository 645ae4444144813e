"""The DynamoDB SessionStore: one item per message plus one meta item per session.

Table (template.yaml `SessionsTable`): pk = session id, sk = "meta" or "m#" + 10-digit sequence,
TTL attribute `expires_at` (epoch seconds). The app never creates the table or changes its TTL.
Every DynamoDB call runs in a worker thread (`anyio.to_thread.run_sync`), off the event loop.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar, cast

import anyio
import anyio.to_thread

from core.aws.client import DynamoDBClient
from core.aws.dynamodb import TTL_ATTRIBUTE, DynamoDBTable
from core.aws.failures import AwsError, retry_delay
from core.errors import SessionBusy, SessionConflict, SessionNotFound, StoreError
from core.model.messages import Message, Role, Status
from core.sessions.port import Page, Session
from core.sessions.rules import (
    check_appendable,
    decode_tool_calls,
    encode_tool_calls,
    expires_at,
    page_window,
    visible_window,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import (
        AttributeValueTypeDef,
        BatchWriteItemOutputTypeDef,
        QueryInputTypeDef,
        TransactWriteItemTypeDef,
        WriteRequestTypeDef,
    )

    Item = dict[str, AttributeValueTypeDef]

T = TypeVar("T")
logger = logging.getLogger(__name__)

META_SK = "meta"
MESSAGE_SK_PREFIX = "m#"

_BATCH_SIZE = 25  # BatchWriteItem's limit


def message_sk(seq: int) -> str:
    """The sort key of message `seq`: zero-padded so string order is sequence order."""
    return f"{MESSAGE_SK_PREFIX}{seq:010d}"


class DynamoDBSessionStore:
    """Sessions in a DynamoDB table, written with conditional puts in one transaction per append.

    `table` is the table and its client, shared with the other adapters that keep items in it
    (quotas); given only a name (and optionally a DynamoDB `client`), the store makes its own.
    """

    def __init__(
        self,
        table_name: str,
        *,
        client: DynamoDBClient | None = None,
        ttl_seconds: float = 7 * 24 * 3600,
        table: DynamoDBTable | None = None,
    ) -> None:
        self.table = table or DynamoDBTable(table_name, client=client)
        self._table = self.table.name
        self._call = self.table.call
        self._ttl = ttl_seconds

    def _meta_key(self, session_id: str) -> Item:
        return {"pk": {"S": session_id}, "sk": {"S": META_SK}}

    async def create(
        self,
        session_id: str,
        *,
        title: str,
        now: float,
        owner: str | None = None,
        lease_seconds: float = 0.0,
        messages: Sequence[Message] = (),
    ) -> None:
        check_appendable(messages)
        expires = str(expires_at(now, self._ttl))
        item: Item = {
            **self._meta_key(session_id),
            "title": {"S": title},
            "created_at": {"N": _number(now)},
            "updated_at": {"N": _number(now)},
            "message_count": {"N": str(len(messages))},
            TTL_ATTRIBUTE: {"N": expires},
        }
        if owner is not None:  # the lease `lock` would take, in the same conditional put
            item["lock_owner"] = {"S": owner}
            item["lock_until"] = {"N": _number(now + lease_seconds)}
        # An expired session that DynamoDB has not deleted yet may be replaced.
        condition = "attribute_not_exists(pk) OR expires_at <= :now"
        values: Item = {":now": {"N": _number(now)}}
        try:
            if not messages:
                await self._call(
                    lambda client: client.put_item(
                        TableName=self._table,
                        Item=item,
                        ConditionExpression=condition,
                        ExpressionAttributeValues=values,
                    )
                )
                return
            # With its first messages: one transaction, and the meta item's condition guards it.
            meta: TransactWriteItemTypeDef = {
                "Put": {
                    "TableName": self._table,
                    "Item": item,
                    "ConditionExpression": condition,
                    "ExpressionAttributeValues": values,
                }
            }
            puts: list[TransactWriteItemTypeDef] = [
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": _message_item(session_id, seq, m, expires),
                    }
                }
                for seq, m in enumerate(messages)
            ]
            await self._call(
                lambda client: client.transact_write_items(TransactItems=[meta, *puts])
            )
        except AwsError as exc:
            raise SessionConflict("session id already exists") from exc

    async def load(self, session_id: str, *, now: float, limit: int | None = None) -> Session:
        # Newest first: "meta" sorts after every "m#..." key, so one query returns the meta item,
        # then the last messages (at least one, for next_seq, which counts expired items too).
        wanted = None if limit is None else max(limit, 1) + 1
        items = await self._query(session_id, newest_first=True, wanted=wanted)
        meta = items[0] if items and items[0]["sk"].get("S") == META_SK else None
        if meta is None or float(meta[TTL_ATTRIBUTE]["N"]) <= now:
            raise SessionNotFound(session_id)
        newest_first = items[1:]
        stored = [_message_from_item(item) for item in reversed(newest_first)]
        return Session(
            id=session_id,
            title=meta["title"]["S"],
            created_at=float(meta["created_at"]["N"]),
            updated_at=float(meta["updated_at"]["N"]),
            messages=visible_window(stored, now=now, limit=limit),
            next_seq=_seq(newest_first[0]) + 1 if newest_first else 0,
        )

    async def page(
        self, session_id: str, *, now: float, limit: int, before: int | None = None
    ) -> Page:
        meta_item = await self._call(
            lambda client: client.get_item(
                TableName=self._table, Key=self._meta_key(session_id), ConsistentRead=True
            )
        )
        meta = meta_item.get("Item")
        if meta is None or float(meta[TTL_ATTRIBUTE]["N"]) <= now:
            raise SessionNotFound(session_id)
        upper = message_sk(before - 1) if before is not None else message_sk(10**10 - 1)
        request: QueryInputTypeDef = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
            "ExpressionAttributeValues": {
                ":pk": {"S": session_id},
                ":lo": {"S": MESSAGE_SK_PREFIX},
                ":hi": {"S": upper},
            },
            "ScanIndexForward": False,
            "ConsistentRead": True,
        }
        stored: list[tuple[int, Message, float]] = []
        # Expired items may linger (TTL deletes late): read on until limit + 1 live ones.
        while sum(1 for _, _, expiry in stored if expiry > now) <= limit:
            request["Limit"] = limit + 1
            result = await self._call(lambda client: client.query(**request))
            for item in result["Items"]:
                stored.append((_seq(item), *_message_from_item(item)))
            if "LastEvaluatedKey" not in result:
                break
            request["ExclusiveStartKey"] = result["LastEvaluatedKey"]
        messages, older = page_window(stored, now=now, limit=limit)
        session = Session(
            id=session_id,
            title=meta["title"]["S"],
            created_at=float(meta["created_at"]["N"]),
            updated_at=float(meta["updated_at"]["N"]),
            messages=messages,
            next_seq=-1,  # not known from a page (and not needed to show one)
        )
        return Page(session, older)

    async def _query(
        self,
        session_id: str,
        *,
        newest_first: bool,
        wanted: int | None,
        keys_only: bool = False,
    ) -> list[Item]:
        """Up to `wanted` items of the session (all when None), following pagination."""
        request: QueryInputTypeDef = {
            "TableName": self._table,
            # Up to "meta": the turn log's `t#...` items share the partition and sort after it.
            "KeyConditionExpression": "pk = :pk AND sk <= :meta",
            "ExpressionAttributeValues": {":pk": {"S": session_id}, ":meta": {"S": META_SK}},
            "ScanIndexForward": not newest_first,
            "ConsistentRead": True,
        }
        if keys_only:
            # Every item of the partition, the turn log's too: a deleted session leaves nothing.
            request["KeyConditionExpression"] = "pk = :pk"
            request["ExpressionAttributeValues"] = {":pk": {"S": session_id}}
            request["ProjectionExpression"] = "pk, sk"
        items: list[Item] = []
        while wanted is None or len(items) < wanted:
            if wanted is not None:
                request["Limit"] = wanted - len(items)
            page = await self._call(lambda client: client.query(**request))
            items.extend(page["Items"])
            if "LastEvaluatedKey" not in page:
                break
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return items

    async def lock(self, session_id: str, *, owner: str, now: float, lease_seconds: float) -> None:
        try:
            await self._call(
                lambda client: client.update_item(
                    TableName=self._table,
                    Key=self._meta_key(session_id),
                    UpdateExpression="SET lock_owner = :owner, lock_until = :until",
                    # The lease: taken only if the session is live and the lock free or lapsed.
                    ConditionExpression=(
                        "attribute_exists(pk) AND expires_at > :now AND "
                        "(attribute_not_exists(lock_until) OR lock_until <= :now)"
                    ),
                    ExpressionAttributeValues={
                        ":owner": {"S": owner},
                        ":until": {"N": _number(now + lease_seconds)},
                        ":now": {"N": _number(now)},
                    },
                )
            )
        except AwsError as exc:
            meta = await self._call(
                lambda client: client.get_item(
                    TableName=self._table, Key=self._meta_key(session_id), ConsistentRead=True
                )
            )
            item = meta.get("Item")
            if item is None or float(item[TTL_ATTRIBUTE]["N"]) <= now:
                raise SessionNotFound(session_id) from exc
            raise SessionBusy() from exc

    async def unlock(self, session_id: str, *, owner: str) -> None:
        # A failed condition means someone else's lease (ours lapsed and was taken) or no
        # session: there is nothing of ours to release.
        with contextlib.suppress(AwsError):
            await self._call(
                lambda client: client.update_item(
                    TableName=self._table,
                    Key=self._meta_key(session_id),
                    UpdateExpression="REMOVE lock_owner, lock_until",
                    ConditionExpression="lock_owner = :owner",
                    ExpressionAttributeValues={":owner": {"S": owner}},
                )
            )

    async def append(
        self, session_id: str, messages: Sequence[Message], *, seq: int, now: float
    ) -> int:
        check_appendable(messages)
        expires = str(expires_at(now, self._ttl))
        meta_update: TransactWriteItemTypeDef = {
            "Update": {
                "TableName": self._table,
                "Key": self._meta_key(session_id),
                "UpdateExpression": "SET updated_at = :now, expires_at = :exp ADD message_count :n",
                "ConditionExpression": "attribute_exists(pk) AND expires_at > :now",
                "ExpressionAttributeValues": {
                    ":now": {"N": _number(now)},
                    ":exp": {"N": expires},
                    ":n": {"N": str(len(messages))},
                },
            }
        }
        puts: list[TransactWriteItemTypeDef] = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": _message_item(session_id, seq + offset, message, expires),
                    # The conditional append: a taken sequence cancels the whole transaction.
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
            for offset, message in enumerate(messages)
        ]
        try:
            await self._call(
                lambda client: client.transact_write_items(TransactItems=[meta_update, *puts])
            )
        except AwsError as exc:
            codes = [reason.get("Code") for reason in exc.cancellation_reasons]
            if codes and codes[0] == "ConditionalCheckFailed":
                raise SessionNotFound(session_id) from exc
            if any(code in ("ConditionalCheckFailed", "TransactionConflict") for code in codes):
                raise SessionConflict(f"sequence {seq} is taken") from exc
            logger.warning("DynamoDB append cancelled: %s", codes)
            raise StoreError("session store failed") from exc
        return seq + len(messages)

    async def delete(self, session_id: str, *, now: float) -> None:
        # The meta item goes first: from then on the session is gone for every reader and
        # writer (their conditions need it); message items left by a failure still expire.
        try:
            await self._call(
                lambda client: client.delete_item(
                    TableName=self._table,
                    Key=self._meta_key(session_id),
                    ConditionExpression="attribute_exists(pk) AND expires_at > :now",
                    ExpressionAttributeValues={":now": {"N": _number(now)}},
                )
            )
        except AwsError as exc:
            raise SessionNotFound(session_id) from exc
        keys = await self._query(session_id, newest_first=False, wanted=None, keys_only=True)
        for start in range(0, len(keys), _BATCH_SIZE):
            await self._batch_delete(keys[start : start + _BATCH_SIZE])

    async def _batch_delete(self, keys: list[Item]) -> None:
        requests: list[WriteRequestTypeDef] = [
            {"DeleteRequest": {"Key": {"pk": key["pk"], "sk": key["sk"]}}} for key in keys
        ]
        # DynamoDB answers a partly throttled batch with the rest to send again; the client does
        # not resend those, so this does, with the client's backoff between tries.
        for attempt in range(self.table.max_attempts):
            if attempt:
                await anyio.sleep(retry_delay(attempt))
            result = await self._call(
                functools.partial(_write_batch, table=self._table, requests=requests)
            )
            unprocessed = result.get("UnprocessedItems", {}).get(self._table, [])
            requests = cast("list[WriteRequestTypeDef]", unprocessed)
            if not requests:
                return
        raise StoreError("session store is busy; try again")

    async def aclose(self) -> None:
        await self.table.aclose()


def _write_batch(
    client: DynamoDBClient, *, table: str, requests: list[WriteRequestTypeDef]
) -> BatchWriteItemOutputTypeDef:
    return client.batch_write_item(RequestItems={table: requests})


def _number(value: float) -> str:
    """A DynamoDB number that reads back as the same float (repr round-trips exactly)."""
    return repr(float(value))


def _message_item(session_id: str, seq: int, message: Message, expires: str) -> Item:
    item: Item = {
        "pk": {"S": session_id},
        "sk": {"S": message_sk(seq)},
        "role": {"S": message.role},
        "content": {"S": message.content},
        "status": {"S": message.status},
        "created_at": {"N": _number(message.created_at)},
        TTL_ATTRIBUTE: {"N": expires},
    }
    tool_calls = encode_tool_calls(message.tool_calls)
    if tool_calls is not None:
        item["tool_calls"] = {"S": tool_calls}
    if message.tool_call_id is not None:
        item["tool_call_id"] = {"S": message.tool_call_id}
    if message.name is not None:
        item["name"] = {"S": message.name}
    if message.reasoning:
        item["reasoning"] = {"S": message.reasoning}
    return item


def _message_from_item(item: Item) -> tuple[Message, float]:
    message = Message(
        role=cast(Role, item["role"]["S"]),
        content=item["content"]["S"],
        status=cast(Status, item["status"]["S"]),
        created_at=float(item["created_at"]["N"]),
        tool_calls=decode_tool_calls(item["tool_calls"]["S"] if "tool_calls" in item else None),
        tool_call_id=item["tool_call_id"]["S"] if "tool_call_id" in item else None,
        name=item["name"]["S"] if "name" in item else None,
        reasoning=item["reasoning"]["S"] if "reasoning" in item else "",
    )
    return message, float(item[TTL_ATTRIBUTE]["N"])


def _seq(item: Item) -> int:
    return int(item["sk"]["S"].removeprefix(MESSAGE_SK_PREFIX))
