using VirtioSharp.Devices;

namespace VirtioSharp.Block;

/// <summary>virtio-blk's feature bits (5.2.3); the device-independent ones are <see cref="VirtioFeatures"/>.</summary>
public static class BlkFeatures
{
    public const int SizeMax = 1;
    public const int SegMax = 2;
    public const int Geometry = 4;
    public const int Ro = 5;
    public const int BlkSize = 6;
    public const int Flush = 9;
    public const int Topology = 10;
    public const int ConfigWce = 11;
    public const int Mq = 12;
    public const int Discard = 13;
    public const int WriteZeroes = 14;

    /// <summary>The spec's name of a virtio-blk bit, or of a device-independent one.</summary>
    public static string Name(int bit) => bit switch
    {
        SizeMax => "VIRTIO_BLK_F_SIZE_MAX",
        SegMax => "VIRTIO_BLK_F_SEG_MAX",
        Geometry => "VIRTIO_BLK_F_GEOMETRY",
        Ro => "VIRTIO_BLK_F_RO",
        BlkSize => "VIRTIO_BLK_F_BLK_SIZE",
        Flush => "VIRTIO_BLK_F_FLUSH",
        Topology => "VIRTIO_BLK_F_TOPOLOGY",
        ConfigWce => "VIRTIO_BLK_F_CONFIG_WCE",
        Mq => "VIRTIO_BLK_F_MQ",
        Discard => "VIRTIO_BLK_F_DISCARD",
        WriteZeroes => "VIRTIO_BLK_F_WRITE_ZEROES",
        _ => VirtioFeatures.Name(bit),
    };

    /// <summary>Names every set bit of a virtio-blk feature word.</summary>
    public static string Describe(ulong features) => VirtioFeatures.Describe(features, Name);
}
