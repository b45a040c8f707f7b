using VirtioSharp.Tests.Vm;

namespace VirtioSharp.Tests.Rbd;

/// <summary>
/// A throwaway single-node Ceph cluster (scripts/ceph-cluster.sh: one monitor, one memstore OSD,
/// pool "rbd", cephx) in a temporary folder, started for real; shared by the tests of a class.
/// A missing Ceph package fails the tests (./test.sh installs them).
/// </summary>
public sealed class CephCluster : IDisposable
{
    private readonly string _script = Repo.Script("ceph-cluster.sh");

    public CephCluster()
    {
        Dir = Directory.CreateTempSubdirectory("vblk-ceph-").FullName;
        var (code, output) = Repo.Run(_script, ["start", Dir], TimeSpan.FromMinutes(2));
        if (code != 0)
        {
            Repo.Run(_script, ["stop", Dir], TimeSpan.FromMinutes(1));
            throw new InvalidOperationException($"ceph-cluster.sh start failed ({code}):\n{output}");
        }
        Conf = Path.Combine(Dir, "ceph.conf");
    }

    public string Dir { get; }
    public string Conf { get; }

    /// <summary>Runs <c>rbd -c CONF ARGS</c>; fails the test when it does.</summary>
    public string Rbd(params string[] args)
    {
        var (code, output) = Repo.Run("rbd", ["-c", Conf, .. args], TimeSpan.FromMinutes(2));
        Assert.True(code == 0, $"rbd {string.Join(' ', args)}: exit {code}\n{output}");
        return output;
    }

    /// <summary>A new image of <paramref name="size"/> bytes in pool rbd; returns its name.</summary>
    public string CreateImage(string name, long size)
    {
        Rbd("create", "--size", $"{size >> 20}M", $"rbd/{name}");
        return name;
    }

    /// <summary>The image's (or snapshot's) bytes, exported by <c>rbd export</c> (Ceph's own client, not ours).</summary>
    public byte[] Export(string image)
    {
        var file = Path.Combine(Dir, $"export-{Guid.NewGuid():N}.raw");
        try
        {
            Rbd("export", $"rbd/{image}", file);
            return File.ReadAllBytes(file);
        }
        finally
        {
            File.Delete(file);
        }
    }

    /// <summary>Stops the OSD with SIGTERM (memstore saves its data) or starts it again and waits until the pool takes writes.</summary>
    public void StopOsd() => Script("stop-osd");

    public void StartOsd() => Script("start-osd");

    private void Script(string action)
    {
        var (code, output) = Repo.Run(_script, [action, Dir], TimeSpan.FromMinutes(2));
        Assert.True(code == 0, $"ceph-cluster.sh {action}: exit {code}\n{output}");
    }

    public void Dispose()
    {
        Repo.Run(_script, ["stop", Dir], TimeSpan.FromMinutes(1));
        try
        {
            Directory.Delete(Dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
