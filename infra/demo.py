"""Demo data: the public buildings of central Helsinki, one organisation, some content and tasks."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from geofences.models import Place
from geofences.osm_import import DEFAULT_PUBLIC_TAGS, read_osm_places
from infra.settings import PROJECT_ROOT
from kernel.uow import unit_of_work
from notifications.models import ContentItem, StaffTask
from services.checkins import issue_qr_token
from services.models import Role
from services.orgs import create_api_key, get_or_create_organisation
from services.places import upsert_places

DEMO_EXTRACT = PROJECT_ROOT / "tests" / "data" / "osm" / "helsinki-centre.osm.pbf"
DEMO_SLUG = "demo"

CONTENT = [
    (
        "Helsingin keskustakirjasto Oodi",
        "Children's reading hour at 15:00",
        "Stories for ages 3-7 on floor 2 today at 15:00. Welcome!",
        "enter",
    ),
    (
        "Helsingin keskustakirjasto Oodi",
        "3D printers free this afternoon",
        "Book a printer at the Urban Workshop desk, floor 2.",
        "dwell",
    ),
    ("Kansalliskirjasto", "Open stacks tour", "Free guided tour of the Cupola Hall at 13:00.", "checkin"),
]
TASKS = [
    ("Erottajan paloasema", "Inspect the fire doors", "Check the self-closing doors on floors 1-3."),
    ("Helsingin keskustakirjasto Oodi", "Collect the returns box", "The outdoor returns box is full."),
]


async def _place_id(session: AsyncSession, organisation_id: int, name: str) -> int | None:
    return (
        await session.execute(
            select(Place.id).where(Place.organisation_id == organisation_id, Place.name == name).limit(1)
        )
    ).scalar_one_or_none()


async def seed_demo(
    factory: async_sessionmaker[AsyncSession], *, want_api_key: bool, want_enrolment_key: bool
) -> dict[str, Any]:
    """Idempotent: a second run updates places by OSM id and adds nothing twice."""
    result = read_osm_places(DEMO_EXTRACT, DEFAULT_PUBLIC_TAGS)
    async with unit_of_work(factory) as uow:
        organisation_id = await get_or_create_organisation(uow.session, name="Helsinki demo", slug=DEMO_SLUG)
        created, updated = await upsert_places(
            uow, organisation_id=organisation_id, actor="demo-seed", specs=result.places
        )
        for place_name, title, body, trigger in CONTENT:
            place_id = await _place_id(uow.session, organisation_id, place_name)
            exists = await uow.session.execute(select(ContentItem.id).where(ContentItem.title == title))
            if place_id and not exists.first():
                uow.session.add(
                    ContentItem(
                        organisation_id=organisation_id,
                        place_id=place_id,
                        title=title,
                        body=body,
                        trigger=trigger,
                        cooldown_s=3600,
                    )
                )
        for place_name, title, body in TASKS:
            place_id = await _place_id(uow.session, organisation_id, place_name)
            exists = await uow.session.execute(select(StaffTask.id).where(StaffTask.title == title))
            if place_id and not exists.first():
                uow.session.add(
                    StaffTask(
                        organisation_id=organisation_id,
                        place_id=place_id,
                        title=title,
                        body=body,
                        team="facilities",
                    )
                )
        api_key = enrolment_key = None
        if want_api_key:
            api_key = await create_api_key(uow.session, organisation_id=organisation_id, name="demo", role=Role.owner)
        if want_enrolment_key:
            enrolment_key = await create_api_key(
                uow.session, organisation_id=organisation_id, name="demo app", purpose="enrolment"
            )
    return {
        "organisation_id": organisation_id,
        "created": created,
        "updated": updated,
        "api_key": api_key,
        "enrolment_key": enrolment_key,
    }


DEMO_VISITOR_PLACE = "Helsingin keskustakirjasto Oodi"


async def visitor_token(factory: async_sessionmaker[AsyncSession], *, secret: str, ttl_s: int) -> str | None:
    """The QR token a printed code at Oodi's door holds (signed with the demo organisation's own QR key), so the demo
    can print the visitor app's link; None when the demo has no Oodi."""
    async with unit_of_work(factory) as uow:
        organisation_id = await get_or_create_organisation(uow.session, name="Helsinki demo", slug=DEMO_SLUG)
        place_id = await _place_id(uow.session, organisation_id, DEMO_VISITOR_PLACE)
        if place_id is None:
            return None
        return await issue_qr_token(uow, secret=secret, organisation_id=organisation_id, place_id=place_id, ttl_s=ttl_s)
