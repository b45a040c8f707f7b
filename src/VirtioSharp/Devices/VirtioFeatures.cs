namespace VirtioSharp.Devices;

/// <summary>The device-independent feature bits (6) and the arithmetic every device's bits share.</summary>
public static class VirtioFeatures
{
    public const int RingIndirectDesc = 28;
    public const int RingEventIdx = 29;
    public const int Version1 = 32;
    public const int AccessPlatform = 33;
    public const int RingPacked = 34;
    public const int InOrder = 35;

    public static ulong Bit(int bit) => 1UL << bit;
    public static bool Has(ulong features, int bit) => (features & (1UL << bit)) != 0;

    /// <summary>The spec's name of a device-independent bit; "bit N" for a bit a device type defines.</summary>
    public static string Name(int bit) => bit switch
    {
        RingIndirectDesc => "VIRTIO_F_INDIRECT_DESC",
        RingEventIdx => "VIRTIO_F_EVENT_IDX",
        Version1 => "VIRTIO_F_VERSION_1",
        AccessPlatform => "VIRTIO_F_ACCESS_PLATFORM",
        RingPacked => "VIRTIO_F_RING_PACKED",
        InOrder => "VIRTIO_F_IN_ORDER",
        30 => "VHOST_USER_F_PROTOCOL_FEATURES",
        _ => $"bit {bit}",
    };

    /// <summary>Names every set bit, through <paramref name="name"/> (a device type's names) or <see cref="Name"/>.</summary>
    public static string Describe(ulong features, Func<int, string>? name = null)
    {
        name ??= Name;
        var names = new List<string>();
        for (var bit = 0; bit < 64; bit++)
        {
            if (Has(features, bit))
                names.Add(name(bit));
        }
        return names.Count == 0 ? "(none)" : string.Join(" ", names);
    }
}
