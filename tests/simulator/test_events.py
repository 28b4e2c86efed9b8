"""The event queue: time order, first come first served, parked devices wake on time."""

from simulator.events import BUCKET_SECONDS, RUN, Event, EventKind, EventQueue

RESUME, WAKE = EventKind.RESUME, EventKind.WAKE


def drain(queue):
    events = []
    while (event := queue.pop()) is not None:
        events.append(event)
    return events


def test_events_come_out_in_time_order_and_ties_in_arrival_order():
    queue = EventQueue(10)
    queue.push(Event(5.0, RESUME, 1))
    queue.push(Event(1.0, RESUME, 2))
    queue.push(Event(5.0, EventKind.DROP, 3))
    queue.push(Event(5.0, RESUME, 0))

    assert [(e.when, e.device) for e in drain(queue)] == [(1.0, 2), (5.0, 1), (5.0, 3), (5.0, 0)]


def test_an_event_comes_out_as_it_went_in():
    queue = EventQueue(10)
    pushed = Event(2.0, EventKind.ARRIVE, 7, payload={"bytes": 3})
    queue.push(pushed)

    assert queue.pop() is pushed


def test_the_runs_own_events_belong_to_no_device():
    assert Event(0.0, EventKind.EVALUATE).device == RUN


def test_parked_devices_wake_at_their_exact_time_among_other_events():
    queue = EventQueue(10)
    queue.park(4, 3 * BUCKET_SECONDS + 1.5)
    queue.park(2, 0.5)
    queue.push(Event(BUCKET_SECONDS * 2, RESUME, 9))

    events = drain(queue)

    assert [(e.when, e.kind, e.device) for e in events] == [
        (0.5, WAKE, 2),
        (BUCKET_SECONDS * 2, RESUME, 9),
        (3 * BUCKET_SECONDS + 1.5, WAKE, 4),
    ]


def test_devices_parked_until_the_same_moment_wake_in_device_order():
    queue = EventQueue(10)
    for device in (6, 1, 3):
        queue.park(device, 30.0)

    assert [e.device for e in drain(queue)] == [1, 3, 6]


def test_a_parked_device_costs_no_heap_entry_until_its_minute_comes():
    queue = EventQueue(100_000)
    for device in range(100_000):
        queue.park(device, 3600.0 + device % 600)

    assert queue.parked == 100_000
    assert len(queue._heap) == 0
    first = queue.pop()
    assert first is not None and first.when == 3600.0
    assert len(queue._heap) < 100_000 / 5  # one minute's worth entered the heap
