using VirtioSharp.Queues;

namespace VirtioSharp.Diagnostics;

/// <summary>
/// Builds the <see cref="RingEvent"/>s of a packed virtqueue (2.8): one descriptor ring both sides
/// write, the AVAIL/USED bits against the two ring wrap counters, and the two event suppression
/// structures. Slots are <see cref="RingEvent.Index"/>, buffer ids <see cref="RingEvent.Head"/>.
/// Only called while someone records.
/// </summary>
public static class PackedRingEvents
{
    private static int Bit(bool b) => b ? 1 : 0;

    /// <summary>"Driver" or "Device": whose wrap counter or event suppression structure.</summary>
    private static string Whose(string side) => side == "driver" ? "Driver" : "Device";

    /// <summary>The driver wrote a descriptor of a list into the ring; <paramref name="held"/>: the list's first, whose flags come last.</summary>
    public static RingEvent DescriptorWrite(int queue, ushort id, int slot, ulong addr, uint len, ushort flags, bool wrap, string role, bool held, ulong table = 0) => new()
    {
        Kind = RingEventKind.DescriptorWrite,
        Actor = "driver",
        Queue = queue,
        Head = id,
        Index = slot,
        Address = addr,
        Length = len,
        Flags = flags,
        Value = id,
        Name = role,
        Table = table,
        WrapCounter = table == 0 ? Bit(wrap) : -1,
        Reason = held ? "held" : null,
        Section = table != 0 ? "2.8.7" : held ? "2.8.6" : "2.8.21.1",
        Words = table != 0
            ? "An indirect table is a block of packed descriptors in guest memory; only WRITE counts in their flags, and their ids are ignored."
            : held
                ? "The driver writes the list's first descriptor (addr, len, id) but holds its flags back: once they say available, the device may read the whole list."
                : "Each descriptor of the list goes into the next slot: AVAIL equal to the Driver Ring Wrap Counter, USED its inverse, WRITE for buffers the device fills, NEXT on all but the last; the buffer id names the list.",
        Text = table != 0
            ? $"  {role,-6} table 0x{table:x} entry {slot}: addr 0x{addr:x} len {len} flags {PackedRing.DescribeFlags(flags)}"
            : $"  {role,-6} descriptor ring slot {slot}: addr 0x{addr:x} len {len} id {id} flags {(held ? "(written last)" : PackedRing.DescribeFlags(flags))}",
    };

    /// <summary>The driver wrote the flags of a list's first descriptor last, making the list available.</summary>
    public static RingEvent DescriptorFlags(int queue, ushort id, int slot, ushort flags, bool wrap, ulong address) => new()
    {
        Kind = RingEventKind.DescriptorFlags,
        Actor = "driver",
        Queue = queue,
        Head = id,
        Index = slot,
        Flags = flags,
        Value = flags,
        Address = address,
        WrapCounter = Bit(wrap),
        Section = "2.8.21.1.1",
        Words = "A write barrier (a release store here), then the first descriptor's flags: this single store hands the whole list to the device.",
        Text = $"slot {slot}'s flags written last, with release, after the rest of the list (2.8.6): AVAIL = Driver Ring Wrap Counter ({Bit(wrap)}), USED its inverse; buffer id {id} hands the list to the device",
    };

    /// <summary>The device found the slot at its position available and took the list (read after the walk, so with its id).</summary>
    public static RingEvent ListTaken(int queue, ushort id, int slot, ushort flags, bool wrap, int slots, ulong address) => new()
    {
        Kind = RingEventKind.AvailRingRead,
        Queue = queue,
        Head = id,
        Index = slot,
        Value = id,
        Flags = flags,
        OldValue = (ulong)slots,
        Address = address,
        WrapCounter = Bit(wrap),
        Section = "2.8.1",
        Words = "The device reads the flags at its position first (acquire): AVAIL equal to the Driver Ring Wrap Counter it expects and USED not means the driver made this slot available in this lap.",
        Text = $"descriptor ring slot {slot}: flags {PackedRing.DescribeFlags(flags)}; AVAIL matches the Driver Ring Wrap Counter the device expects ({Bit(wrap)}) and USED does not: available (2.8.1), read with acquire before the rest; a list of {slots} slot{(slots == 1 ? "" : "s")}, buffer id {id} in its last descriptor (2.8.6)",
    };

    public static RingEvent DescriptorRead(int queue, ushort id, int slot, ulong addr, uint len, ushort flags, bool wrap, ulong table) => new()
    {
        Kind = RingEventKind.DescriptorRead,
        Queue = queue,
        Head = id,
        Index = slot,
        Address = addr,
        Length = len,
        Flags = flags,
        Value = id,
        Table = table,
        WrapCounter = table == 0 ? Bit(wrap) : -1,
        Section = table != 0 || (flags & PackedRing.DescFIndirect) != 0 ? "2.8.7" : "2.8.6",
        Words = "The device reads the list slot by slot while NEXT is set; every descriptor carries the list's AVAIL/USED bits, and the buffer id is in the last one.",
        Text = table != 0
            ? $"  read table 0x{table:x} entry {slot}: addr 0x{addr:x} len {len} flags {PackedRing.DescribeFlags(flags)}"
            : $"  read descriptor ring slot {slot}: addr 0x{addr:x} len {len} id {id} flags {PackedRing.DescribeFlags(flags)}",
    };

    /// <summary>The device wrote one used descriptor for a whole list, in place, flags last.</summary>
    public static RingEvent UsedWrite(int queue, ushort id, int slot, uint written, ushort flags, bool wrap, int slots, int next, ulong address) => new()
    {
        Kind = RingEventKind.UsedRingWrite,
        Queue = queue,
        Head = id,
        Index = slot,
        Value = id,
        Length = written,
        Flags = flags,
        OldValue = (ulong)slots,
        Address = address,
        WrapCounter = Bit(wrap),
        Section = "2.8.6",
        Words = "One used descriptor returns a whole list: written over the next used slot with the buffer id and the bytes written, its flags last (release) with AVAIL and USED both equal to the Device Ring Wrap Counter.",
        Text = $"used descriptor written over slot {slot}: id {id}, len {written}, then flags {PackedRing.DescribeFlags(flags)} last with release: AVAIL and USED both equal the Device Ring Wrap Counter ({Bit(wrap)}), handing the slot back (2.8.1)"
            + (slots > 1 ? $"; the list's other {slots - 1} slot(s) are skipped, next used slot {next}" : $"; next used slot {next}"),
    };

    /// <summary>The driver found a used descriptor where it expected one.</summary>
    public static RingEvent UsedRead(int queue, ushort id, int slot, uint len, ushort flags, bool wrap, int slots, int next, ulong address) => new()
    {
        Kind = RingEventKind.UsedRingRead,
        Actor = "driver",
        Queue = queue,
        Head = id,
        Index = slot,
        Value = id,
        Length = len,
        Flags = flags,
        OldValue = (ulong)slots,
        Address = address,
        WrapCounter = Bit(wrap),
        Section = "2.8.22",
        Words = "The driver reads the flags at its used position first (acquire): AVAIL and USED both equal to the Device Ring Wrap Counter it expects means used; then id and len, and it frees the list's slots.",
        Text = $"descriptor ring slot {slot}: flags {PackedRing.DescribeFlags(flags)}; AVAIL and USED both equal the Device Ring Wrap Counter the driver expects ({Bit(wrap)}): used, read with acquire before id {id} and len {len} (2.8.22); buffer id {id} had {slots} slot(s), the next used descriptor will be in slot {next}",
    };

    /// <summary>
    /// A ring wrap counter flipped. <paramref name="counter"/>: "driver" (Driver Ring Wrap Counter) or
    /// "device" (Device Ring Wrap Counter); <paramref name="actor"/> keeps this copy (the owner's, or the other side's expectation).
    /// </summary>
    public static RingEvent WrapCounter(string actor, int queue, string counter, bool value, int nextSlot, ushort id) => new()
    {
        Kind = RingEventKind.WrapCounter,
        Actor = actor,
        Queue = queue,
        Head = id,
        Name = counter,
        OldValue = (ulong)Bit(!value),
        Value = (ulong)Bit(value),
        Index = nextSlot,
        WrapCounter = Bit(value),
        Section = "2.8.1",
        Words = "Each side keeps a ring wrap counter, 1 at the start, and flips it each time its position passes the ring's last slot; the AVAIL/USED bits compared with it tell this lap's descriptors from the last lap's.",
        Text = (actor, counter) switch
        {
            ("driver", "driver") => $"the list used the ring's last slot: Driver Ring Wrap Counter flips to {Bit(value)}; the next list starts at slot {nextSlot} (2.8.1)",
            ("device", "driver") => $"the list ran past the ring's last slot: the device now expects Driver Ring Wrap Counter {Bit(value)} (2.8.1)",
            ("device", _) => $"the used position passed the ring's end: next used slot {nextSlot}, Device Ring Wrap Counter flips to {Bit(value)} (2.8.1)",
            _ => $"the used position passed the ring's end: the driver now expects Device Ring Wrap Counter {Bit(value)} at slot {nextSlot} (2.8.1)",
        },
    };

    /// <summary>An event suppression structure in the spec's words (2.8.10, 2.8.14).</summary>
    public static string DescribeEvent(ushort offWrap, int flags) => flags switch
    {
        PackedRing.EventFlagsEnable => "flags RING_EVENT_FLAGS_ENABLE",
        PackedRing.EventFlagsDisable => "flags RING_EVENT_FLAGS_DISABLE",
        PackedRing.EventFlagsDesc => $"flags RING_EVENT_FLAGS_DESC, desc_event_off {offWrap & 0x7fff}, desc_event_wrap {offWrap >> 15}",
        _ => $"reserved flags {flags}",
    };

    /// <summary>
    /// An event suppression structure written by its owner or read by the other side.
    /// <paramref name="structure"/>: "driver" (Driver Event Suppression, the driver's wish about interrupts) or "device".
    /// </summary>
    public static RingEvent EventSuppression(string actor, int queue, string structure, ushort offWrap, ushort flags, bool write, ulong address) => new()
    {
        Kind = RingEventKind.EventSuppression,
        Actor = actor,
        Queue = queue,
        Name = structure,
        Value = offWrap,
        Flags = flags,
        Index = offWrap & 0x7fff,
        WrapCounter = offWrap >> 15,
        Write = write,
        Address = address,
        Section = write ? "2.8.10" : "2.8.14",
        Words = structure == "driver"
            ? "The Driver Event Suppression structure tells the device when the driver wants used buffer notifications: ENABLE (always), DISABLE (never) or DESC (once the descriptor at desc_event_off, in the lap desc_event_wrap, is used; needs EVENT_IDX)."
            : "The Device Event Suppression structure tells the driver when the device wants available buffer notifications: ENABLE, DISABLE, or DESC (once the descriptor at desc_event_off, in the lap desc_event_wrap, is made available; needs EVENT_IDX).",
        Text = write
            ? $"{Whose(structure)} Event Suppression written: {DescribeEvent(offWrap, flags & PackedRing.EventFlagsMask)}"
            : $"full barrier, then the {Whose(structure)} Event Suppression structure: {DescribeEvent(offWrap, flags & PackedRing.EventFlagsMask)}",
    };

    public static RingEvent Notification(int queue, bool notify, string reason) => new()
    {
        Kind = RingEventKind.Notification,
        Actor = "driver",
        Queue = queue,
        Suppressed = !notify,
        Reason = reason,
        Section = "2.8.21.3",
        Words = "After making lists available and a full barrier, the driver reads the Device Event Suppression structure to decide whether to notify the device.",
        Text = notify ? $"notify the device: {reason}" : $"no notification: {reason}",
    };

    public static RingEvent InterruptDecision(int queue, bool interrupt, string reason) => new()
    {
        Kind = RingEventKind.Interrupt,
        Queue = queue,
        Suppressed = !interrupt,
        Reason = reason,
        Name = "decision",
        Section = "2.8.10",
        Words = "After writing used descriptors and a full barrier, the device reads the Driver Event Suppression structure to decide whether to send a used buffer notification.",
        Text = interrupt ? $"send a used buffer notification: {reason}" : $"no interrupt: {reason}",
    };

    /// <summary>Why a notification (or interrupt) was or was not sent, from the other side's event suppression structure.</summary>
    public static string Reason(ushort offWrap, int flags, bool eventIdx, int count, int size, bool sent, string what)
    {
        if (flags == PackedRing.EventFlagsDisable)
            return "RING_EVENT_FLAGS_DISABLE";
        if (flags == PackedRing.EventFlagsDesc && eventIdx && count < size)
            return $"EVENT_IDX: desc_event_off {offWrap & 0x7fff} (wrap {offWrap >> 15}) {(sent ? "is" : "is not")} among the {count} slot(s) just {what}";
        if (flags == PackedRing.EventFlagsDesc)
            return eventIdx ? "RING_EVENT_FLAGS_DESC, but a whole ring's worth was written" : "RING_EVENT_FLAGS_DESC without EVENT_IDX counts as enabled";
        return flags == PackedRing.EventFlagsEnable ? "RING_EVENT_FLAGS_ENABLE" : $"reserved flags {flags} count as enabled";
    }
}
