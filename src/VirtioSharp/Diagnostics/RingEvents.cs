namespace VirtioSharp.Diagnostics;

/// <summary>
/// Builds <see cref="RingEvent"/>s: each with its narration, spec section and the rule it follows in
/// a few words of our own. Only called while someone records.
/// </summary>
public static class RingEvents
{
    public static string DescFlags(ushort flags)
    {
        if (flags == 0)
            return "0";
        var parts = new List<string>(3);
        if ((flags & 1) != 0) parts.Add("NEXT");
        if ((flags & 2) != 0) parts.Add("WRITE");
        if ((flags & 4) != 0) parts.Add("INDIRECT");
        if ((flags & ~7) != 0) parts.Add($"0x{flags & ~7:x}");
        return string.Join("|", parts);
    }

    public static RingEvent QueueSetup(int queue, int size, ulong desc, ulong avail, ulong used, bool eventIdx, bool indirect, string format) => new()
    {
        Kind = RingEventKind.QueueSetup,
        Queue = queue,
        Value = (ulong)size,
        Address = desc,
        Table = avail,
        OldValue = used,
        Flags = (ushort)((eventIdx ? 1 : 0) | (indirect ? 2 : 0)),
        Name = format,
        Section = format == "packed" ? "2.8" : "2.7",
        Words = format == "packed"
            ? "A packed virtqueue is one descriptor ring both sides read and write, and two small event suppression structures: the driver's (driver area) and the device's (device area)."
            : "A virtqueue is three areas in guest memory: the descriptor table, the driver area (available ring) and the device area (used ring).",
        Text = format == "packed"
            ? $"queue {queue}: packed ring of {size} entries; descriptor ring 0x{desc:x}, driver event suppression 0x{avail:x}, device event suppression 0x{used:x}{(eventIdx ? ", EVENT_IDX" : "")}{(indirect ? ", INDIRECT_DESC" : "")}"
            : $"queue {queue}: {format} ring of {size} entries; descriptor table 0x{desc:x}, available ring 0x{avail:x}, used ring 0x{used:x}{(eventIdx ? ", EVENT_IDX" : "")}{(indirect ? ", INDIRECT_DESC" : "")}",
    };

    public static RingEvent DescriptorWrite(int queue, int head, int index, ulong addr, uint len, ushort flags, ushort next, ulong table, string role) => new()
    {
        Kind = RingEventKind.DescriptorWrite,
        Actor = "driver",
        Queue = queue,
        Head = head,
        Index = index,
        Address = addr,
        Length = len,
        Flags = flags,
        Next = next,
        Table = table,
        Name = role,
        Section = table == 0 ? "2.7.13.1" : "2.7.5.3",
        Words = table == 0
            ? "The driver places each buffer of a request in a free descriptor; NEXT links it to the following one, WRITE marks buffers the device fills."
            : "Inside an indirect table the descriptors chain by position; the table itself is one descriptor with the INDIRECT flag.",
        Text = $"  {role,-6} {(table == 0 ? "descriptor" : $"table 0x{table:x} entry")} {index}: addr 0x{addr:x} len {len} flags {DescFlags(flags)} next {((flags & 1) != 0 ? next.ToString() : "-")}",
    };

    public static RingEvent DescriptorRead(int queue, int head, int index, ulong addr, uint len, ushort flags, ushort next, ulong table) => new()
    {
        Kind = RingEventKind.DescriptorRead,
        Queue = queue,
        Head = head,
        Index = index,
        Address = addr,
        Length = len,
        Flags = flags,
        Next = next,
        Table = table,
        Section = (flags & 4) != 0 || table != 0 ? "2.7.5.3" : "2.7.5",
        Words = "The device follows the chain from its head: each descriptor gives a guest address, a length, and NEXT to continue; WRITE buffers are for the device to fill.",
        Text = $"  read {(table == 0 ? "descriptor" : $"table 0x{table:x} entry")} {index}: addr 0x{addr:x} len {len} flags {DescFlags(flags)}{((flags & 1) != 0 ? $" next {next}" : "")}",
    };

    public static RingEvent AvailRingWrite(int queue, int head, int slot, ulong address) => new()
    {
        Kind = RingEventKind.AvailRingWrite,
        Actor = "driver",
        Queue = queue,
        Head = head,
        Index = slot,
        Value = (ulong)head,
        Address = address,
        Section = "2.7.13.2",
        Words = "The driver writes the chain's head index into the next free slot of the available ring (idx modulo the queue size).",
        Text = $"available ring: ring[{slot}] = {head}",
    };

    public static RingEvent AvailIndex(int queue, ushort oldIdx, ushort newIdx, int size, ulong address) => new()
    {
        Kind = RingEventKind.AvailIndex,
        Actor = "driver",
        Queue = queue,
        Value = newIdx,
        OldValue = oldIdx,
        Address = address,
        Index = (newIdx - 1) & (size - 1),
        Section = "2.7.13.3",
        Words = "Only after the ring entries are visible (a write barrier) does the driver move idx; idx only grows and wraps at 65536.",
        Text = $"available ring: idx {oldIdx} -> {newIdx} (written after the ring entry, release barrier)",
    };

    public static RingEvent AvailRingRead(int queue, int head, int slot, ushort availIdx, ulong address) => new()
    {
        Kind = RingEventKind.AvailRingRead,
        Queue = queue,
        Head = head,
        Index = slot,
        Value = (ulong)head,
        OldValue = availIdx,
        Address = address,
        Section = "2.7.6",
        Words = "The device reads idx to see how far the driver got, then takes the heads in order from the slots it has not processed yet.",
        Text = $"took head {head} from available ring slot {slot} (avail idx {availIdx}) of queue {queue}; walking the chain:",
    };

    public static RingEvent Request(int queue, int head, uint type, ulong sector, byte[]? header, string actor = "device") => new()
    {
        Kind = RingEventKind.Request,
        Actor = actor,
        Queue = queue,
        Head = head,
        Value = sector,
        OldValue = type,
        Name = BlkTypeName(type),
        Data = header,
        Section = "5.2.6",
        Words = actor == "driver"
            ? "A block request is a chain: a 16-byte header the device reads (type, reserved, sector), the data, and one status byte the device writes."
            : "The device reads the request's 16-byte header (type, reserved, sector) from the first device-readable bytes of the chain.",
        Text = actor == "driver"
            ? $"request {BlkTypeName(type)} sector {sector}: header {{ type = {type}, reserved = 0, sector = {sector} }}"
            : $"header read: {BlkTypeName(type)} sector {sector}",
    };

    public static string BlkTypeName(uint type) => type switch
    {
        0 => "IN",
        1 => "OUT",
        4 => "FLUSH",
        8 => "GET_ID",
        11 => "DISCARD",
        13 => "WRITE_ZEROES",
        _ => $"type {type}",
    };

    public static RingEvent UsedRingWrite(int queue, int head, int slot, uint written, ulong address) => new()
    {
        Kind = RingEventKind.UsedRingWrite,
        Queue = queue,
        Head = head,
        Index = slot,
        Value = (ulong)head,
        Length = written,
        Address = address,
        Section = "2.7.8",
        Words = "The device returns the chain by writing { id = head, len = bytes written into the device-writable buffers } into the next used slot.",
        Text = $"used ring: ring[{slot}] = {{ id = {head}, len = {written} }}",
    };

    public static RingEvent UsedIndex(int queue, ushort oldIdx, ushort newIdx, int size, ulong address) => new()
    {
        Kind = RingEventKind.UsedIndex,
        Queue = queue,
        Value = newIdx,
        OldValue = oldIdx,
        Address = address,
        Index = (newIdx - 1) & (size - 1),
        Section = "2.7.8.2",
        Words = "The used element must be visible before the used idx moves past it (a write barrier, then the idx store).",
        Text = $"used ring: idx {oldIdx} -> {newIdx}",
    };

    public static RingEvent UsedRingRead(int queue, int head, int slot, uint length, ulong address) => new()
    {
        Kind = RingEventKind.UsedRingRead,
        Actor = "driver",
        Queue = queue,
        Head = head,
        Index = slot,
        Value = (ulong)head,
        Length = length,
        Address = address,
        Section = "2.7.14",
        Words = "The driver reads used elements up to the used idx, frees each chain's descriptors and completes the request.",
        Text = $"used ring: read ring[{slot}] = {{ id = {head}, len = {length} }}; descriptors freed",
    };

    public static RingEvent FlagFlip(string actor, int queue, string field, ushort oldValue, ushort newValue, string flag, ulong address, string section, string words) => new()
    {
        Kind = RingEventKind.FlagFlip,
        Actor = actor,
        Queue = queue,
        Name = field,
        OldValue = oldValue,
        Value = newValue,
        Reason = flag,
        Address = address,
        Section = section,
        Words = words,
        Text = $"{field}: {oldValue} -> {newValue} ({((newValue & ~oldValue) != 0 ? "set" : "cleared")} {flag})",
    };

    public static RingEvent EventIndex(string actor, int queue, string field, ushort value, ulong address) => new()
    {
        Kind = RingEventKind.EventIndex,
        Actor = actor,
        Queue = queue,
        Name = field,
        Value = value,
        Address = address,
        Section = field == "used_event" ? "2.7.7" : "2.7.10",
        Words = field == "used_event"
            ? "With EVENT_IDX the driver writes used_event: interrupt me once the used idx passes this value."
            : "With EVENT_IDX the device writes avail_event: notify me once the available idx passes this value.",
        Text = $"{field} = {value} ({(field == "used_event" ? "interrupt me when used idx passes it" : "notify me when avail idx passes it")})",
    };

    public static RingEvent Notification(int queue, bool suppressed, string reason) => new()
    {
        Kind = RingEventKind.Notification,
        Actor = "driver",
        Queue = queue,
        Suppressed = suppressed,
        Reason = reason,
        Section = "2.7.13.4",
        Words = "After moving idx and a full barrier, the driver checks whether the device wants a notification: avail_event with EVENT_IDX, otherwise the NO_NOTIFY flag.",
        Text = suppressed ? $"no notification: {reason}" : $"notification needed: {reason}",
    };

    public static RingEvent InterruptDecision(int queue, bool suppressed, string reason) => new()
    {
        Kind = RingEventKind.Interrupt,
        Queue = queue,
        Suppressed = suppressed,
        Reason = reason,
        Name = "decision",
        Section = "2.7.7.2",
        Words = "After moving the used idx and a full barrier, the device checks whether the driver wants an interrupt: used_event with EVENT_IDX, otherwise the NO_INTERRUPT flag.",
        Text = suppressed ? $"no interrupt: {reason}" : $"interrupt needed: {reason}",
    };

    public static RingEvent InterruptRaised(int queue, uint status, string how) => new()
    {
        Kind = RingEventKind.Interrupt,
        Queue = queue,
        Value = status,
        Name = "raised",
        Section = "4.2.3.4",
        Words = "The device sets a bit in InterruptStatus (bit 0: used buffer) and raises its interrupt line; the driver's handler reads the register and acknowledges it.",
        Text = $"InterruptStatus |= 1 (used buffer notification), {how}",
    };

    public static RingEvent Register(ulong busAddress, uint offset, string name, uint value, bool write, string words, string section) => new()
    {
        Kind = RingEventKind.Register,
        Actor = "driver",
        Address = busAddress,
        Offset = offset,
        Name = name,
        Value = value,
        Write = write,
        Section = section,
        Words = words,
        Text = write ? $"MMIO write: {name} (0x{busAddress:x}) = 0x{value:x}" : $"MMIO read: {name} (0x{busAddress:x}) -> 0x{value:x}",
    };

    public static RingEvent Backend(int queue, int head, string operation, ulong offset, ulong length, string what) => new()
    {
        Kind = RingEventKind.BackendIo,
        Queue = queue,
        Head = head,
        Name = operation,
        Value = offset,
        OldValue = length,
        Section = "5.2.6",
        Words = "The device carries out the request on its storage; data moves straight between the backend and the guest's buffers.",
        Text = what,
    };

    public static RingEvent Status(string actor, int queue, int head, ulong address, byte status, byte[]? data) => new()
    {
        Kind = RingEventKind.Status,
        Actor = actor,
        Queue = queue,
        Head = head,
        Address = address,
        Value = status,
        Data = data,
        Name = BlkStatusName(status),
        Section = "5.2.6",
        Words = actor == "device"
            ? "The device writes the final status into the request's last byte: 0 OK, 1 IOERR, 2 UNSUPP."
            : "The driver reads the status byte once the used element names the request.",
        Text = actor == "device"
            ? $"status byte at 0x{address:x} = {status} (VIRTIO_BLK_S_{BlkStatusName(status)})"
            : $"status byte at 0x{address:x} is {status} (VIRTIO_BLK_S_{BlkStatusName(status)}); waiting caller woken",
    };

    public static string BlkStatusName(byte status) => status switch { 0 => "OK", 1 => "IOERR", 2 => "UNSUPP", _ => $"0x{status:x}" };

    public static RingEvent Breach(DriverBreach b) => new()
    {
        Kind = RingEventKind.Breach,
        Queue = b.Queue,
        Index = b.Descriptor,
        Section = b.Section,
        Name = b.Expected,
        Reason = b.Found,
        Words = $"expected {b.Expected}",
        Text = $"driver breach: {b}",
    };

    public static RingEvent Connection(int number, bool open) => new()
    {
        Kind = RingEventKind.Connection,
        Value = open ? 1u : 0u,
        OldValue = (ulong)number,
        Text = open ? $"front-end {number} connected" : $"front-end {number} left",
    };

    /// <summary>vhost-user: the device's worker read the kick eventfd; <paramref name="count"/> is what the eventfd had added up.</summary>
    public static RingEvent Kick(int queue, ulong count) => new()
    {
        Kind = RingEventKind.Notification,
        Actor = "device",
        Queue = queue,
        Name = "kick",
        Value = count,
        Words = "Over vhost-user the driver notifies the device by writing its queue's kick eventfd. The eventfd adds writes up until the device reads it, so one read may stand for several notifications: the count shows how the driver batched.",
        Text = count == 1
            ? "kick eventfd read: 1 notification from the driver"
            : $"kick eventfd read: {count} notifications from the driver since the last read (the eventfd added them up)",
    };

    /// <summary>vhost-user: the device wrote the call eventfd (its used buffer notification).</summary>
    public static RingEvent Call(int queue, string why) => new()
    {
        Kind = RingEventKind.Interrupt,
        Queue = queue,
        Name = "raised",
        Value = 1,
        Reason = why,
        Words = "Over vhost-user the device's used buffer notification is a write to the queue's call eventfd; the front-end (QEMU, or KVM through an irqfd) turns it into the guest's interrupt.",
        Text = $"call eventfd written: used buffer notification to the driver ({why})",
    };

    public static RingEvent Note(string actor, string text) => new() { Kind = RingEventKind.Note, Actor = actor, Text = text };
}
