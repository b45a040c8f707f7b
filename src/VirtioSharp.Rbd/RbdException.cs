namespace VirtioSharp.Rbd;

/// <summary>A Ceph call failed while opening an image: what we were doing, and the errno librados or librbd returned.</summary>
public sealed class RbdException : IOException
{
    public RbdException(string what, int result)
        : base($"{what}: {VirtioSharp.Native.Errno.Describe(-result)}")
    {
        Errno = -result;
    }

    public RbdException(string message) : base(message) { }

    /// <summary>The positive errno, or 0 when the message says it all.</summary>
    public int Errno { get; }
}
