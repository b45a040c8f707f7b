namespace VirtioSharp.Diagnostics;

/// <summary>What happened to a virtqueue, a register or a request: one kind per thing the rings do.</summary>
public enum RingEventKind
{
    /// <summary>Free text from <see cref="ITraceSink.Step"/> (code that narrates without an event).</summary>
    Note,
    /// <summary>A queue's geometry became known: size and the three areas' addresses.</summary>
    QueueSetup,
    /// <summary>The driver wrote a descriptor (split: table entry; packed: ring entry).</summary>
    DescriptorWrite,
    /// <summary>The device read a descriptor while walking a chain.</summary>
    DescriptorRead,
    /// <summary>The driver put a chain head into an available ring slot.</summary>
    AvailRingWrite,
    /// <summary>The device took a chain head from an available ring slot.</summary>
    AvailRingRead,
    /// <summary>The driver moved the available index (Value = new, OldValue = old).</summary>
    AvailIndex,
    /// <summary>The device wrote a used element.</summary>
    UsedRingWrite,
    /// <summary>The device moved the used index.</summary>
    UsedIndex,
    /// <summary>The driver read a used element and freed its descriptors.</summary>
    UsedRingRead,
    /// <summary>A flags field changed (VIRTQ_USED_F_NO_NOTIFY, VIRTQ_AVAIL_F_NO_INTERRUPT; packed: AVAIL/USED bits).</summary>
    FlagFlip,
    /// <summary>used_event or avail_event written (VIRTIO_F_EVENT_IDX).</summary>
    EventIndex,
    /// <summary>The driver decided to notify the device, or not (Suppressed, Reason).</summary>
    Notification,
    /// <summary>The device decided an interrupt was wanted, or not; or raised the line.</summary>
    Interrupt,
    /// <summary>A virtio-mmio register load or store (Name, Offset, Value).</summary>
    Register,
    /// <summary>The request header as the device reads it (type, sector) and its data bytes.</summary>
    Request,
    /// <summary>The device ran the request against its backend.</summary>
    BackendIo,
    /// <summary>The status byte of a request (written by the device, read by the driver).</summary>
    Status,
    /// <summary>A driver breach the strict checks reported at this point.</summary>
    Breach,
    /// <summary>A front-end connected (Value = 1) or left (Value = 0).</summary>
    Connection,
    /// <summary>Packed rings (2.8.1): a ring wrap counter flipped (Name "driver" or "device": whose counter; Actor: whose copy).</summary>
    WrapCounter,
    /// <summary>Packed rings (2.8.10, 2.8.14): an event suppression structure written or read (Name "driver" or "device"; Value = off_wrap, Flags = flags).</summary>
    EventSuppression,
    /// <summary>Packed rings (2.8.6): the flags of one descriptor ring slot written on their own (OldValue = before, Value = after).</summary>
    DescriptorFlags,
}

/// <summary>
/// One thing the rings did, with the guest addresses and values involved, the spec section it
/// follows and the spec's rule in a few words. One type serves both halves (driver, device), both
/// transports (virtio-mmio, vhost-user) and both ring formats: packed-ring facts use
/// <see cref="WrapCounter"/> and <see cref="FlagFlip"/> events. Made only when someone records.
/// </summary>
public sealed class RingEvent
{
    /// <summary>Position in the recording (set by the recorder).</summary>
    public long Seq { get; set; }
    /// <summary>Nanoseconds since the recording started (set by the recorder).</summary>
    public long TimeNs { get; set; }
    public RingEventKind Kind { get; init; }
    /// <summary>"driver" or "device".</summary>
    public string Actor { get; init; } = "device";
    /// <summary>Queue index, or -1 when no queue is involved (device registers).</summary>
    public int Queue { get; init; } = -1;
    /// <summary>Request number within the recording (1, 2, ...), or 0 outside any request.</summary>
    public long Request { get; set; }
    /// <summary>Head of the chain this event belongs to, or -1.</summary>
    public int Head { get; init; } = -1;
    /// <summary>Descriptor index or ring slot the event touches, or -1.</summary>
    public int Index { get; init; } = -1;
    /// <summary>Guest address the event touches (a descriptor's addr, a status byte, a register's bus address).</summary>
    public ulong Address { get; init; }
    public uint Length { get; init; }
    public ushort Flags { get; init; }
    public ushort Next { get; init; }
    /// <summary>The value written or read: an index, a register, a status byte, an element's id.</summary>
    public ulong Value { get; init; }
    public ulong OldValue { get; init; }
    /// <summary>Register or field name (QueueNotify, used.flags, used_event).</summary>
    public string? Name { get; init; }
    public uint Offset { get; init; }
    /// <summary>Register events: a store (true) or a load.</summary>
    public bool Write { get; init; }
    /// <summary>Notification / interrupt: the other side asked not to be told.</summary>
    public bool Suppressed { get; init; }
    /// <summary>Why a notification or interrupt was or was not sent (EVENT_IDX, NO_NOTIFY, NO_INTERRUPT).</summary>
    public string? Reason { get; init; }
    /// <summary>Descriptor events: address of the indirect table the entry lives in, 0 for the queue's own table.</summary>
    public ulong Table { get; init; }
    /// <summary>Packed rings (2.8): the wrap counter the event used, or -1 for split rings.</summary>
    public int WrapCounter { get; init; } = -1;
    /// <summary>Bytes shown with the event (a request's header and first data bytes), copied out of guest memory.</summary>
    public byte[]? Data { get; init; }
    /// <summary>Spec section number, e.g. "2.7.13.2".</summary>
    public string? Section { get; init; }
    /// <summary>The spec's rule for this step, in a few words.</summary>
    public string? Words { get; init; }
    /// <summary>What happened, as one line of narration.</summary>
    public string Text { get; init; } = "";
}
